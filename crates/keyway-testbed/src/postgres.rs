//! A throwaway PostgreSQL cluster for tests of the Postgres store: `scripts/postgres
//! run`, started once per test process, and a database of its own for every test, so
//! tests run in parallel and never share tables. Made for tests: it panics, saying
//! why, when the cluster cannot start.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio_postgres::{Client, NoTls};

const NEEDED: &str = "the Postgres store's tests need PostgreSQL 15's server binaries \
                      (apt-get install postgresql)";

/// The cluster, and `scripts/postgres run` keeping it: the script's stdin stays open
/// inside `child` for as long as this process lives; when the process ends, however it
/// ends, the pipe closes and the script stops the server and removes `dir`.
pub struct Cluster {
    url: String,
    dir: tempfile::TempDir,
    child: Mutex<Child>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it carries the cluster's password.
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The test binary's cluster, started by the first caller.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

/// A client on `url`, its connection driven by a task of its own.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Cluster {
    fn start() -> Cluster {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
        let dir = tempfile::Builder::new()
            .prefix("keyway-pg.")
            .tempdir()
            .expect("a temporary directory for the test cluster");
        let mut child = Command::new(&script)
            .arg("run")
            .arg("--rm")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}; {NEEDED}", script.display()));

        // Drained all along, so the script never blocks on it; read when it fails.
        let mut stderr = child.stderr.take().expect("the script's stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        // The script prints `ready DIR/url` once the server accepts connections (it
        // gives up by itself after 30 s), or exits.
        let mut stdout = BufReader::new(child.stdout.take().expect("the script's stdout is piped"));
        let mut url_file = None;
        let mut line = String::new();
        while url_file.is_none() {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => url_file = line.trim_end().strip_prefix("ready ").map(PathBuf::from),
            }
        }
        let Some(url_file) = url_file else {
            let status = child.wait();
            let errors = errors.join().unwrap_or_default();
            panic!(
                "scripts/postgres run {} failed ({status:?}):\n{errors}\n{NEEDED}",
                dir.path().display()
            );
        };
        child.stdout = Some(stdout.into_inner());
        let url = std::fs::read_to_string(&url_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", url_file.display()))
            .trim()
            .to_owned();
        Cluster {
            url,
            dir,
            child: Mutex::new(child),
        }
    }

    /// A new, empty database of this test's own, as a URL to connect to.
    pub async fn fresh_database(&self) -> String {
        let stopped = self
            .child
            .lock()
            .expect("the cluster's script")
            .try_wait()
            .expect("the cluster's script's status");
        if let Some(status) = stopped {
            panic!(
                "the test cluster in {} has stopped ({status})",
                self.dir.path().display()
            );
        }
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("keyway_test_{}_{n}", std::process::id());
        connect(&self.url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let (server, _) = self
            .url
            .rsplit_once('/')
            .expect("the cluster's URL ends in a database name");
        format!("{server}/{name}")
    }
}
