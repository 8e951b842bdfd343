//! The pod seam: the exit code kube's exec reports, and the scripted test
//! implementation's answers.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use pgsteward_operator::exec::{ExecOutput, PodExec, Scripted, exit_code_of};
use serde_json::json;

#[test]
fn the_exit_code_comes_from_the_final_status_of_an_exec() {
    // What the kubelet sends at the end of an exec (remotecommand v4+).
    let table = [
        (json!({"status": "Success", "metadata": {}}), Some(0)),
        (
            json!({"status": "Failure", "reason": "NonZeroExitCode",
                   "message": "command terminated with non-zero exit code: error executing command [backup.sh], exit code 5",
                   "details": {"causes": [{"reason": "ExitCode", "message": "5"}]}}),
            Some(5),
        ),
        // The command never ran: no code to report, and the operator must
        // not read one (a backup it never started is not a failed backup).
        // The form a real kube-apiserver 1.32 sent with the kubelet down:
        (
            json!({"status": "Failure", "reason": "InternalError",
                   "message": "Internal error occurred: error sending request: Post \"https://192.0.2.2:10250/exec/pgs-node/dev-0/postgres?command=backup.sh\": connect: connection refused",
                   "code": 500}),
            None,
        ),
        (
            json!({"status": "Failure", "reason": "InternalError",
                   "message": "exec: \"nope\": executable file not found in $PATH"}),
            None,
        ),
    ];
    for (status, code) in table {
        let s: Status = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(exit_code_of(&s), code, "{status}");
    }
}

#[tokio::test]
async fn scripted_answers_once_before_always_and_records_every_call() {
    let pod = Scripted::new();
    let out = |code: i32, text: &str| ExecOutput {
        exit_code: code,
        stdout: text.into(),
        stderr: String::new(),
    };
    pod.always(&["pgsteward-status"], out(0, "{}"));
    pod.once(&["backup.sh", "--id", "b1"], out(5, ""));
    pod.always(&["backup.sh"], out(0, "done"));
    let run = |cmd: &[&str]| {
        pod.exec(
            "shop",
            "db-0",
            cmd.iter().map(|s| s.to_string()).collect(),
            Duration::from_secs(1),
        )
    };
    assert_eq!(
        run(&["backup.sh", "--id", "b1"]).await.unwrap().exit_code,
        5
    );
    assert_eq!(
        run(&["backup.sh", "--id", "b1"]).await.unwrap().stdout,
        "done"
    );
    assert_eq!(run(&["pgsteward-status"]).await.unwrap().stdout, "{}");
    assert!(
        run(&["pg_ctl", "reload"]).await.is_err(),
        "no answer: unreachable"
    );
    let calls = pod.take_calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].0, "shop/db-0");
    assert_eq!(calls[3].1, vec!["pg_ctl", "reload"]);
    assert!(pod.calls().is_empty());
}
