//! A real SMTP server for mail tests: aiosmtpd (PyPI) in a venv under the target directory,
//! writing every message it receives to a maildir that [`Sink::messages`] reads.

use super::in_ci;

/// aiosmtpd from PyPI in a venv under the target directory (created on first use).
pub fn aiosmtpd_python() -> Option<std::path::PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
    let venv = std::path::PathBuf::from(target).join("aiosmtpd-venv");
    let py = venv.join("bin/python");
    let ok = |py: &std::path::Path| {
        std::process::Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&py) {
        return Some(py);
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--timeout", "60", "aiosmtpd==1.4.6"])
            .status()
            .is_ok_and(|s| s.success());
    (made && ok(&py)).then_some(py)
}

pub struct Sink {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.path().join("mail").join(sub)) {
                for e in rd.flatten() {
                    // Undo quoted-printable soft line breaks so long links read whole.
                    let raw = std::fs::read_to_string(e.path()).unwrap_or_default();
                    out.push(raw.replace("=\r\n", "").replace("=\n", ""));
                }
            }
        }
        out
    }
}

pub async fn smtp_sink() -> Option<(Sink, u16)> {
    let Some(py) = aiosmtpd_python() else {
        if in_ci() {
            panic!("aiosmtpd could not be installed");
        }
        eprintln!("skipped: aiosmtpd not available");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(py)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(dir.path().join("mail"))
        .spawn()
        .unwrap();
    let sink = Sink { child, dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some((sink, port));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("aiosmtpd did not start");
}
