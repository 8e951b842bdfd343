//! The pod seam: every operation talks to the instance's pod only through
//! [`PodExec`]. The real implementation ([`KubeExec`]) runs a command in the
//! `postgres` container over kube's websocket exec; tests use [`Scripted`],
//! which answers from a script and records what was asked.
//!
//! A leaf: it knows no command; `observe` reads with it, `act` changes with
//! it, the PgBackup controller backs up with it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::AttachParams};
use tokio::io::AsyncReadExt;

/// The container the image runs in (see `build`).
pub const CONTAINER: &str = "postgres";

/// What a command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The command's exit code (0 on success).
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Why a command could not be run (not: it ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not exec in pod {pod}")]
    Connect {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("exec in pod {pod} did not finish within {seconds} s")]
    Timeout { pod: String, seconds: u64 },
    #[error("exec in pod {pod} ended without an exit status")]
    NoStatus { pod: String },
    /// The API server or the kubelet could not run the command at all (the
    /// kubelet is unreachable, the container is gone, the command does not
    /// exist): not an exit code of the command.
    #[error("exec in pod {pod} did not run: {message}")]
    NotRun { pod: String, message: String },
    #[error("reading the output of exec in pod {pod}")]
    Read {
        pod: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs commands in an instance's pod.
pub trait PodExec: Send + Sync {
    /// Run `command` in the `postgres` container of `namespace/pod` and wait
    /// at most `timeout` for it.
    fn exec<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>>;
}

/// The real exec: `pods/exec` over a websocket.
#[derive(Clone)]
pub struct KubeExec {
    pub client: Client,
}

/// The exit code in an exec's final `Status`: `Success` is 0; a command
/// that ran and failed carries its code as the `ExitCode` cause (the
/// kubelet's convention). None: a failure without a code, so the command
/// never ran (the API server could not reach the kubelet, the command was
/// not found); the status's message says why.
pub fn exit_code_of(
    status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.trim().parse().ok())
        })
}

impl PodExec for KubeExec {
    fn exec<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let params = AttachParams::default()
                .container(CONTAINER)
                .stdin(false)
                .stdout(true)
                .stderr(true);
            let run = async {
                let mut process =
                    api.exec(pod, command, &params)
                        .await
                        .map_err(|source| ExecError::Connect {
                            pod: pod.to_string(),
                            source,
                        })?;
                let status = process.take_status();
                let mut out = process.stdout();
                let mut err = process.stderr();
                let read = |r: Option<_>| async move {
                    let mut buf = Vec::new();
                    if let Some(mut r) = r {
                        tokio::io::ReadHalf::<tokio::io::SimplexStream>::read_to_end(
                            &mut r, &mut buf,
                        )
                        .await?;
                    }
                    Ok::<_, std::io::Error>(buf)
                };
                let (stdout, stderr) = tokio::try_join!(read(out.take()), read(err.take()))
                    .map_err(|source| ExecError::Read {
                        pod: pod.to_string(),
                        source,
                    })?;
                let status = match status {
                    Some(s) => s.await,
                    None => None,
                };
                let _ = process.join().await;
                let status = status.ok_or_else(|| ExecError::NoStatus {
                    pod: pod.to_string(),
                })?;
                let exit_code = exit_code_of(&status).ok_or_else(|| ExecError::NotRun {
                    pod: pod.to_string(),
                    message: status.message.clone().unwrap_or_else(|| {
                        status
                            .reason
                            .clone()
                            .unwrap_or_else(|| "no reason given".into())
                    }),
                })?;
                Ok(ExecOutput {
                    exit_code,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                })
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(ExecError::Timeout {
                    pod: pod.to_string(),
                    seconds: timeout.as_secs(),
                }),
            }
        }
        .boxed()
    }
}

/// One scripted answer: for a command whose words start with `prefix`.
#[derive(Clone, Debug)]
pub struct Answer {
    pub prefix: Vec<String>,
    pub output: ExecOutput,
    /// Answer only once (then the next answer for the prefix is used);
    /// otherwise answer every time.
    pub once: bool,
}

/// One command run through [`Scripted`]: `namespace/pod` and its words.
pub type Call = (String, Vec<String>);

/// A test implementation: answers from a script, records every command.
/// A command with no answer is an error (`NoStatus`), like a pod that
/// cannot be reached.
#[derive(Clone, Default)]
pub struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scripted {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer every command starting with `prefix` with `output`.
    pub fn always(&self, prefix: &[&str], output: ExecOutput) -> &Self {
        self.push(prefix, output, false)
    }

    /// Answer the next command starting with `prefix` with `output`, once.
    pub fn once(&self, prefix: &[&str], output: ExecOutput) -> &Self {
        self.push(prefix, output, true)
    }

    fn push(&self, prefix: &[&str], output: ExecOutput, once: bool) -> &Self {
        let mut answers = self.answers.lock().expect("answers lock");
        // A one-time answer goes before the standing ones for its prefix.
        let answer = Answer {
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            output,
            once,
        };
        if once {
            answers.push_front(answer);
        } else {
            answers.push_back(answer);
        }
        self
    }

    /// Forget every answer.
    pub fn clear(&self) {
        self.answers.lock().expect("answers lock").clear();
    }

    /// The commands run so far, as `pod: words`.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Take the commands run so far.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("calls lock"))
    }
}

impl PodExec for Scripted {
    fn exec<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        command: Vec<String>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        let pod_key = format!("{namespace}/{pod}");
        self.calls
            .lock()
            .expect("calls lock")
            .push((pod_key.clone(), command.clone()));
        let mut answers = self.answers.lock().expect("answers lock");
        let found = answers.iter().position(|a| command.starts_with(&a.prefix));
        let result = match found {
            Some(i) => {
                let a = if answers[i].once {
                    answers.remove(i).expect("index exists")
                } else {
                    answers[i].clone()
                };
                Ok(a.output)
            }
            None => Err(ExecError::NoStatus { pod: pod_key }),
        };
        async move { result }.boxed()
    }
}

/// Runs commands on this machine instead of in a pod: the image's scripts
/// (`images/postgres/scripts/`) against a local volume, for tests that
/// drive the whole path (spec, operator, script, state file, status) with
/// only the kubelet missing. `command[0]` is looked up in `scripts_dir`
/// first, then on `PATH`; the environment is this process's plus `env`
/// (the pod template's, e.g. `PGSTEWARD_VOLUME`, `PGDATA`, `PG_MAJOR`).
#[derive(Clone, Debug, Default)]
pub struct LocalExec {
    pub scripts_dir: std::path::PathBuf,
    pub env: Vec<(String, String)>,
    /// Words put before every command, e.g. `setpriv --reuid=postgres …`
    /// to run as the pod's unprivileged user.
    pub prefix: Vec<String>,
    /// Container paths and where they are here (the pod's mounts): an
    /// argument that starts with a container path is rewritten.
    pub mounts: Vec<(String, std::path::PathBuf)>,
}

impl LocalExec {
    fn map_arg(&self, arg: &str) -> String {
        for (container, local) in &self.mounts {
            if let Some(rest) = arg.strip_prefix(container.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", local.display());
            }
        }
        arg.to_string()
    }
}

impl PodExec for LocalExec {
    fn exec<'a>(
        &'a self,
        _namespace: &'a str,
        pod: &'a str,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        let this = self.clone();
        let pod = pod.to_string();
        async move {
            let run = tokio::task::spawn_blocking(move || {
                let script = this.scripts_dir.join(&command[0]);
                let program = if script.is_file() {
                    script.display().to_string()
                } else {
                    command[0].clone()
                };
                let mut argv: Vec<String> = this.prefix.clone();
                argv.push(program);
                argv.extend(command[1..].iter().map(|a| this.map_arg(a)));
                std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .envs(this.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(std::process::Stdio::null())
                    .output()
            });
            let output = match tokio::time::timeout(timeout, run).await {
                Err(_) => {
                    return Err(ExecError::Timeout {
                        pod,
                        seconds: timeout.as_secs(),
                    });
                }
                Ok(Err(join)) => {
                    return Err(ExecError::Read {
                        pod,
                        source: std::io::Error::other(join),
                    });
                }
                Ok(Ok(Err(source))) => return Err(ExecError::Read { pod, source }),
                Ok(Ok(Ok(o))) => o,
            };
            Ok(ExecOutput {
                // Killed by a signal: 128 + the signal, as a shell reports it.
                exit_code: output.status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + output.status.signal().unwrap_or(0)
                }),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
        .boxed()
    }
}
