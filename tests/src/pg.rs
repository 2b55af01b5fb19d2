//! A real PostgreSQL server for the tests: `initdb` in a temporary directory, listening only on a
//! Unix socket in that directory (no port to race for), password authentication on, stopped when
//! dropped, and killed by the kernel if the test process dies first.
//!
//! The binaries are found like `scripts/postgres bindir` finds them: `initdb` on PATH (with
//! `pg_ctl` and `postgres` beside it), else the newest `/usr/lib/postgresql/*/bin`. initdb
//! refuses to run as root, so as root the server runs as the `postgres` user.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// The superuser's password on every test server.
pub const PASSWORD: &str = "stagecraft-test-pw";

/// A running (or stopped, between `stop` and `start`) test server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// fsync and synchronous commit on (benchmarks); off for tests, which need no durability.
    durable: bool,
    /// The port: names the Unix socket, and the TCP port of a TLS server.
    port: u16,
    /// `-c` settings added by `start_tls`.
    extra: Vec<String>,
    /// The server's log lines (stderr), kept for failure messages.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Where the server binaries are (see the module docs), or a message saying how to get them.
pub fn bindir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                if let Some(real) = initdb
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                {
                    if complete(&real) {
                        return Ok(real);
                    }
                }
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in \
         /usr/lib/postgresql/*/bin; run scripts/postgres install"
            .to_string()
    })
}

/// The uid and gid of `name` from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

impl PgServer {
    /// initdb and start a server without fsync (tests); panics with its log if it cannot.
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// A server with PostgreSQL's default durability (fsync, synchronous commit), for
    /// benchmarks that compare it with the file backend's fsync'd commits.
    pub fn start_durable() -> PgServer {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> PgServer {
        let bindir = bindir().unwrap_or_else(|e| panic!("{e}"));
        let run_as = if rustix::process::geteuid().is_root() {
            Some(user_ids("postgres").expect(
                "running as root, the test server runs as the `postgres` user, which does not \
                 exist; run scripts/postgres install",
            ))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("stagecraft-pg")
            .tempdir()
            .expect("temp dir");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "--no-sync",
                "--username=postgres",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            bindir,
            run_as,
            child: None,
            durable,
            port: 5432,
            extra: Vec::new(),
            log: Default::default(),
        };
        server.start_again();
        server
    }

    /// A server that also listens on 127.0.0.1 (a free port) and accepts TCP connections only
    /// over TLS (`hostssl`), with a certificate for `localhost` and 127.0.0.1 signed by a CA of
    /// its own ([`PgServer::ca_cert`]).
    pub fn start_tls() -> PgServer {
        let mut server = Self::start_with(false);
        server.stop();
        let tls = server.dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let ca = make_ca(&tls, "ca");
        let key = tls.join("server.key");
        let csr = tls.join("server.csr");
        let crt = tls.join("server.crt");
        let ext = tls.join("server.ext");
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca.to_str().unwrap(),
            "-CAkey",
            tls.join("ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = server.run_as {
            for f in [&key, &crt] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
            }
        }
        std::fs::write(
            server.dir.path().join("data/pg_hba.conf"),
            "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        server.port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        server.extra = vec![
            "listen_addresses=127.0.0.1".into(),
            "ssl=on".into(),
            format!("ssl_cert_file={}", crt.display()),
            format!("ssl_key_file={}", key.display()),
        ];
        server.start_again();
        server
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// A TCP URL to a TLS server's `db` through `localhost`, with `query` appended.
    pub fn tcp_url(&self, db: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@localhost:{}/{db}?{query}",
            self.port
        )
    }

    /// Start the server on its existing data directory and wait until it accepts connections
    /// (synchronized on its "ready" log line, not on time).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
            .arg("-c")
            .arg(format!("port={}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for setting in &self.extra {
            cmd.arg("-c").arg(setting);
        }
        if !self.durable {
            // Test servers run many at once: small, and without durability. A benchmark's keeps
            // PostgreSQL's defaults.
            cmd.args([
                "-c",
                "shared_buffers=32MB",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // If this test process dies (a panic that aborts, a SIGKILL), the kernel stops the
        // server too: SIGQUIT is PostgreSQL's immediate shutdown.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::QUIT,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().expect("start postgres");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("database system is ready to accept connections") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
        // The reader drops its sender at EOF, so a server that exits early ends this wait.
        if ready_rx.recv().is_err() {
            let _ = child.wait();
            panic!(
                "postgres exited before accepting connections:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
        self.child = Some(child);
    }

    /// Fast shutdown (SIGINT: disconnect every client, roll back their transactions) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::INT);
            child.wait().unwrap();
        }
    }

    /// The socket directory, percent-encoded as a URL host.
    fn host(&self) -> String {
        self.dir.path().display().to_string().replace('/', "%2F")
    }

    /// A URL for `db` with the superuser's password.
    pub fn url(&self, db: &str) -> String {
        self.url_with_password(db, PASSWORD)
    }

    pub fn url_with_password(&self, db: &str, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@{}:{}/{db}",
            self.host(),
            self.port
        )
    }

    /// A URL for `db` whose server is gone: a socket directory where nothing listens.
    pub fn unreachable_url(&self, db: &str) -> String {
        let nowhere = self.dir.path().join("nowhere");
        std::fs::create_dir_all(&nowhere).unwrap();
        format!(
            "postgres://postgres:{PASSWORD}@{}/{db}",
            nowhere.display().to_string().replace('/', "%2F")
        )
    }

    /// A superuser connection to `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to test server database {db}: {e}"))
    }

    /// Create an empty database and return its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(name)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A self-signed CA (`<name>.pem`, `<name>.key`) in `dir`; returns the certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let pem = dir.join(format!("{name}.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=stagecraft test {name}"),
        "-keyout",
        dir.join(format!("{name}.key")).to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
    pem
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate shutdown: the data directory is thrown away with the temp dir.
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::QUIT);
            let _ = child.wait();
        }
    }
}
