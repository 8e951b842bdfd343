"""The node tier's figures (test_operator.FIGURES), in the summary, where
pytest's output capture does not hide them."""


def pytest_terminal_summary(terminalreporter):
    import test_operator

    if test_operator.FIGURES:
        terminalreporter.write_line("node tier figures:")
        for key, value in test_operator.FIGURES.items():
            terminalreporter.write_line(f"  {key}: {value}")
