//! Archiving to an S3 bucket, on a real S3 protocol server: moto's
//! (`scripts/tools moto` installs it), started by each test on a free
//! loopback port and killed at its end. Segments go to
//! `s3://bucket/prefix` through the same retention round `serve` runs,
//! `ledger verify --archive s3://…` passes from genesis and reports a
//! tampered object, and an unknown bucket or missing credentials stop
//! `serve` at its preflight with a message that says so.
//!
//! `gs://` runs on the same server. object_store's GCS client speaks GCS's
//! XML API for everything (upload, multipart, read, list), which is the S3
//! protocol; no GCS emulator on PyPI answers it (`gcp-storage-emulator`
//! 2026.7.19 has no XML listing or multipart and sends no `ETag` or
//! `Last-Modified`, which the client requires). So moto stands in for
//! GCS's endpoint (`GOOGLE_BASE_URL`), taking the client's OAuth bearer
//! token (`GOOGLE_BEARER_TOKEN`) without checking it: this checks our
//! `gs://` wiring, bucket, prefix and `GOOGLE_*` settings, and the GCS
//! client's calls; not Google's authentication.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use super::*;

/// A moto S3 server on loopback, killed when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    fn start() -> Moto {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tools = Command::new(root.join("scripts/tools"))
            .arg("moto")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/tools runs");
        assert!(tools.status.success(), "scripts/tools moto failed");
        let server = String::from_utf8(tools.stdout).unwrap().trim().to_owned();
        // A port taken between our probe and moto's bind: another port.
        for _ in 0..5 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = Moto { child, addr };
            // Ready once it answers HTTP (a connection alone can be a
            // socket still starting, or loopback connecting to itself on
            // a port nothing listens on yet): at most 600 tries, 50 ms apart.
            for _ in 0..600 {
                if moto.child.try_wait().unwrap().is_some() {
                    break;
                }
                if moto
                    .answer("GET / HTTP/1.1", "")
                    .is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
                {
                    return moto;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables a governor reaching this server would have.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// The whole answer to `request_line` with `body`, on a connection of its own.
    fn answer(&self, request_line: &str, body: &str) -> std::io::Result<String> {
        use std::io::{Read as _, Write as _};
        let mut stream = TcpStream::connect(self.addr)?;
        write!(
            stream,
            "{request_line}\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// An unsigned `PUT` of `body` to `target` (sent again, up to three
    /// times, if the connection breaks: a `PUT` may be repeated); panics
    /// unless answered 200.
    fn put(&self, target: &str, body: &str) {
        let request_line = format!("PUT {target} HTTP/1.1");
        let mut answer = self.answer(&request_line, body);
        for _ in 0..2 {
            if answer.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            answer = self.answer(&request_line, body);
        }
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// Makes bucket `name` (S3's `CreateBucket`, a bare `PUT /name`).
    fn create_bucket(&self, name: &str) {
        self.put(&format!("/{name}"), "");
    }

    /// The variables of a `gs://` archive on this server.
    fn gcs_env(&self) -> Vec<(String, String)> {
        [
            ("GOOGLE_BASE_URL", self.endpoint()),
            ("GOOGLE_ALLOW_HTTP", "true".to_owned()),
            ("GOOGLE_BEARER_TOKEN", "ya29.not-checked".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// A client of `bucket` of our own, not the archive's: reads and
    /// writes objects the way another tool (or an attacker) would.
    fn client(&self, bucket: &str) -> AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (name, value) in self.env() {
            builder = builder.with_config(name.to_ascii_lowercase().parse().unwrap(), value);
        }
        builder.build().unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the child process finds its arguments (one a line).
const CHILD_ARGS: &str = "GGEN_IT_ARCHIVE_CLI_ARGS";

/// Not a test: the command line [`cli`] runs in a process of its own,
/// whose environment carries the archive's variables.
#[test]
#[ignore = "entry point of a child process"]
fn cli_child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let code = ggen_runtime::cli::run(&OPEN, args.lines());
    let code = [0, 1, 2]
        .into_iter()
        .find(|&n| code == ExitCode::from(n))
        .unwrap_or(3);
    std::process::exit(code.into());
}

/// `governor ARGS…` in a child process with `env` (and none of this
/// process's `AWS_*`, `GOOGLE_*`, `GCE_*`): its exit code and what it wrote.
fn cli(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "ledger::archive::bucket::cli_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ARGS,
            ["governor"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .env_remove("GOVERNOR_AUTH_TOKEN");
    for (name, _) in std::env::vars() {
        if ["AWS_", "GOOGLE_", "GCE_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            command.env_remove(name);
        }
    }
    let output = command.envs(env.iter().cloned()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// The object names under `prefix` in `bucket`, sorted.
fn names(rt: &tokio::runtime::Runtime, client: &AmazonS3, prefix: &str) -> Vec<String> {
    let prefix = object_store::path::Path::from(prefix);
    let mut names: Vec<String> = rt
        .block_on(
            client
                .list(Some(&prefix))
                .map_ok(|o| o.location.to_string())
                .try_collect(),
        )
        .unwrap();
    names.sort();
    names
}

/// A file ledger in a work folder (its `ledger` folder) with 200 signals
/// applied and retention keeping 8 KiB, archiving to `url` (checked
/// first) with `env`: the folder, the archive, the runtime, and how many
/// segments were cut (at least 3).
fn archived_200(
    url: &str,
    env: Vec<(String, String)>,
) -> (tempfile::TempDir, Archive, tokio::runtime::Runtime, usize) {
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::open_with_env(url, env).unwrap();
    let rt = runtime();
    rt.block_on(archive.check()).unwrap();
    let cut = {
        let (ledger, registry) = open(&work.path().join("ledger"));
        load(&registry, 0, 200);
        keep_8_kib(&rt, &ledger, &archive)
    };
    assert!(cut >= 3, "{cut}");
    (work, archive, rt, cut)
}

#[test]
fn segments_archived_to_an_s3_prefix_verify_from_genesis_and_a_tampered_one_is_reported() {
    let moto = Moto::start();
    moto.create_bucket("ledgers");
    let url = "s3://ledgers/eu/governor-1";
    let (work, archive, rt, cut) = archived_200(url, moto.env());
    let dir = work.path().join("ledger");
    // The objects are the segments, by name, under the prefix and only there.
    let client = moto.client("ledgers");
    let expected: Vec<String> = (1..=cut)
        .map(|id| format!("eu/governor-1/{id:010}.seg"))
        .collect();
    assert_eq!(names(&rt, &client, ""), expected);
    assert!(!dir.join("0000000001.seg").exists());
    assert_eq!(verify_all(&dir, &archive).first_bad, None);
    let ledger_arg = dir.to_str().unwrap();
    let verify = ["ledger", "verify", "--ledger", ledger_arg, "--archive", url];
    let (code, text) = cli(&verify, &moto.env());
    assert_eq!(code, 0, "{text}");
    // Another client rewrites segment 2 with one bit flipped.
    let second = object_store::path::Path::from("eu/governor-1/0000000002.seg");
    let clean = rt
        .block_on(async { client.get(&second).await?.bytes().await })
        .unwrap();
    let mut flipped = clean.to_vec();
    flipped[100] ^= 1;
    rt.block_on(client.put(&second, flipped.into())).unwrap();
    let bad = verify_all(&dir, &archive).first_bad.unwrap();
    assert!(
        bad.reason.contains("0000000002.seg") || bad.reason.contains("hash"),
        "{}",
        bad.reason
    );
    let (code, text) = cli(&verify, &moto.env());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("archived segment `0000000002.seg`"), "{text}");
    // The same copy put back verifies again.
    rt.block_on(client.put(&second, clean.into())).unwrap();
    let (code, text) = cli(&verify, &moto.env());
    assert_eq!(code, 0, "{text}");
}

#[test]
fn serve_checks_the_bucket_before_it_starts() {
    let moto = Moto::start();
    moto.create_bucket("ledgers");
    let work = tempfile::tempdir().unwrap();
    let ledger = work.path().join("ledger");
    let serve = |check: bool, url: &str, env: &[(String, String)]| {
        let mut args = vec!["serve"];
        if check {
            args.push("--check");
        }
        args.extend([
            "--insecure-no-auth",
            "--actions",
            "log",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
            ledger.to_str().unwrap(),
            "--retain",
            "7d",
            "--archive",
            url,
        ]);
        cli(&args, env)
    };
    let (code, text) = serve(true, "s3://ledgers/governor", &moto.env());
    assert_eq!(code, 0, "{text}");
    // A bucket that does not exist: refused at start, naming it.
    for check in [true, false] {
        let (code, text) = serve(check, "s3://no-such-bucket/governor", &moto.env());
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("archive `s3://no-such-bucket/governor` cannot be listed"),
            "{text}"
        );
        assert!(text.contains("NoSuchBucket"), "{text}");
        assert!(!text.contains("listening"), "{text}");
    }
    // No credentials, and no metadata server to get them from (a closed
    // loopback port stands for one that is not there).
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(name, _)| !name.contains("_KEY"))
        .chain([(
            "AWS_METADATA_ENDPOINT".to_owned(),
            format!("http://{closed}"),
        )])
        .collect();
    let (code, text) = serve(false, "s3://ledgers/governor", &env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("archive `s3://ledgers/governor` cannot be listed (no `AWS_ACCESS_KEY_ID`"),
        "{text}"
    );
    // A secret without its key id is refused before anything is reached.
    let env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(name, _)| name != "AWS_ACCESS_KEY_ID")
        .collect();
    let (code, text) = serve(true, "s3://ledgers/governor", &env);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("AccessKeyId"), "{text}");
    assert!(!ledger.exists(), "a refused start opened the ledger");
}

#[test]
fn a_segment_larger_than_an_upload_part_is_archived_whole() {
    let moto = Moto::start();
    moto.create_bucket("ledgers");
    archive_12_mib_segment(&moto, "s3://ledgers/big", moto.env());
    archive_12_mib_segment(&moto, "gs://ledgers/big-gs", moto.gcs_env());
}

/// S3 and GCS's XML API refuse multipart uploads whose parts but the last
/// are under 5 MiB: a 12 MiB segment goes up in parts.
fn archive_12_mib_segment(moto: &Moto, url: &str, env: Vec<(String, String)>) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ledger");
    let options = FileOptions {
        segment_bytes: 12 << 20,
        ..fast_options()
    };
    let ledger: Arc<dyn Ledger> = Arc::new(FileLedger::open(&dir, options).unwrap());
    let note = "x".repeat(60_000);
    while ledger.as_file().unwrap().segments().unwrap().1 < 2 {
        append_next(ledger.as_ref(), &tenant("big"), &note);
    }
    ledger.checkpoint(ledger.mark().unwrap(), b"all").unwrap();
    let local = fs_err::read(ledger.as_file().unwrap().segment_path(1)).unwrap();
    assert!(local.len() > 10 << 20, "{}", local.len());
    let archive = Archive::open_with_env(url, env).unwrap();
    let rt = runtime();
    let cut = rt
        .block_on(archive::archive_due(
            &ledger,
            &archive,
            Retain::Bytes(1),
            SystemTime::now(),
        ))
        .unwrap();
    assert_eq!(cut, 1);
    let copy = rt
        .block_on(async {
            let prefix = url.rsplit('/').next().unwrap();
            let path = object_store::path::Path::from(format!("{prefix}/0000000001.seg"));
            moto.client("ledgers").get(&path).await?.bytes().await
        })
        .unwrap();
    assert!(copy == local, "the archived copy differs from the segment");
}

#[test]
fn segments_archived_to_a_gs_prefix_verify_from_genesis() {
    let moto = Moto::start();
    moto.create_bucket("ledgers");
    let url = "gs://ledgers/eu/governor-2";
    let (work, archive, rt, cut) = archived_200(url, moto.gcs_env());
    let dir = work.path().join("ledger");
    let expected: Vec<String> = (1..=cut)
        .map(|id| format!("eu/governor-2/{id:010}.seg"))
        .collect();
    assert_eq!(names(&rt, &moto.client("ledgers"), ""), expected);
    assert_eq!(verify_all(&dir, &archive).first_bad, None);
    let verify = [
        "ledger",
        "verify",
        "--ledger",
        dir.to_str().unwrap(),
        "--archive",
        url,
    ];
    let (code, text) = cli(&verify, &moto.gcs_env());
    assert_eq!(code, 0, "{text}");
    // No credentials, and no metadata server to get them from (closed
    // loopback ports stand for one that is not there).
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let env: Vec<(String, String)> = moto
        .gcs_env()
        .into_iter()
        .filter(|(name, _)| name != "GOOGLE_BEARER_TOKEN")
        .chain([
            ("GCE_METADATA_HOST".to_owned(), closed.clone()),
            ("GCE_METADATA_IP".to_owned(), closed),
        ])
        .collect();
    let serve = [
        "serve",
        "--check",
        "--insecure-no-auth",
        "--actions",
        "log",
        "--listen",
        "127.0.0.1:0",
        "--ledger",
        dir.to_str().unwrap(),
        "--retain",
        "7d",
        "--archive",
        url,
    ];
    let (code, text) = cli(&serve, &env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("archive `gs://ledgers/eu/governor-2` cannot be listed (neither `GOOGLE_APPLICATION_CREDENTIALS`"),
        "{text}"
    );
}
