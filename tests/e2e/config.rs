//! `tenure config check FILE` and `tenure serve --config FILE`: every problem of
//! a file reported with its line, a server whose listeners come from the file,
//! and the command line over the file.

use crate::support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use support::Server;
use support::raw::RawClient;

fn tenure(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(support::tenure_bin()).args(args).output().expect("run tenure")
}

fn write(file: &Path, text: &str) {
    std::fs::write(file, text).expect("write the configuration file");
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn config_check_reports_every_problem_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenure.toml");
    write(
        &file,
        "listen = \"127.0.0.1:14000\"\nadmin-lissen = \"127.0.0.1:14001\"\nmax-streams = 0\neab-required = \"yes\"\nhostname = [\n",
    );
    let out = tenure(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let f = file.display();
    let expected = [
        format!("{f}:2:1: unknown key `admin-lissen` (did you mean `admin-listen`?)"),
        format!("{f}:3:15: invalid value '0' for '--max-streams <MAX_STREAMS>'"),
        format!("{f}:4:16: `eab-required` is a switch: true or false, not a string"),
        format!("{f}:5:13: syntax: unclosed array"),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(line.starts_with(expected.as_str()), "{line:?} should start with {expected:?}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 problems"), "{}", String::from_utf8_lossy(&out.stderr));

    // The same as one JSON object.
    let out = tenure(&["config".as_ref(), "check".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 4, "{report:#}");
    assert_eq!(problems[0]["line"], 2);
    assert_eq!(problems[0]["column"], 1);
    assert_eq!(problems[0]["key"], "admin-lissen");
}

#[test]
fn config_check_passes_a_good_file_and_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenure.toml");
    write(&file, "listen = \"0.0.0.0:14000\"\nhostname = [\"a.example\", \"b.example\"]\neab-required = true\nrenewal-interval = 30\n");
    let out = tenure(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}: ok, 4 settings\n", file.display()));
    let out = tenure(&["config".as_ref(), "check".as_ref(), file.as_os_str(), "--json".as_ref()]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["ok"], true);
    assert_eq!(report["settings"], 4);

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tenure.toml");
    let out = tenure(&["config".as_ref(), "check".as_ref(), example.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A file setting the data directory, both listeners and the validation ports.
fn server_file(dir: &Path, data: &Path, listen: SocketAddr, admin: SocketAddr) -> std::path::PathBuf {
    let file = dir.join("tenure.toml");
    write(
        &file,
        &format!(
            "# A test server\ndata = {data:?}\nlisten = \"{listen}\"\nadmin-listen = \"{admin}\"\n\
             http01-port = {}\ntlsalpn01-port = {}\nhostname = [\"ca.test\"]\n",
            support::free_port(),
            support::free_port(),
        ),
    );
    file
}

#[tokio::test]
async fn serve_takes_its_listeners_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (listen, admin) = (local(support::free_port()), local(support::free_port()));
    let file = server_file(dir.path(), &data, listen, admin);

    let server = Server::start_with_args(&data, &["--config".as_ref(), file.as_os_str()], listen, admin);

    // The directory is served at the file's address, the admin API listens at its.
    let client = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    assert!(client.url("newAccount").starts_with(&format!("https://{listen}/")), "{}", client.directory);
    assert!(TcpStream::connect(admin).is_ok(), "the admin API listens at the file's admin-listen");
    assert!(server.log().contains("settings from the configuration file"), "{}", server.log());
}

#[tokio::test]
async fn a_flag_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (in_file, admin) = (local(support::free_port()), local(support::free_port()));
    let file = server_file(dir.path(), &data, in_file, admin);
    let on_command_line = local(support::free_port());

    let listen = on_command_line.to_string();
    let server = Server::start_with_args(
        &data,
        &["--config".as_ref(), file.as_os_str(), "--listen".as_ref(), listen.as_ref()],
        on_command_line,
        admin,
    );

    RawClient::new(&server.directory_url(), &server.root_pem()).await;
    assert!(TcpStream::connect(in_file).is_err(), "nothing listens at the file's address");
    assert!(TcpStream::connect(admin).is_ok(), "what the command line leaves is the file's");
}

#[test]
fn serve_refuses_a_file_with_problems_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("tenure.toml");
    write(&file, &format!("data = {data:?}\nlisen = \"127.0.0.1:1\"\n"));
    let out = support::tenure_command(&data).arg("serve").arg("--config").arg(&file).output().expect("run tenure serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:2:1: unknown key `lisen` (did you mean `listen`?)", file.display())), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(!data.exists(), "nothing was made");
}

#[test]
fn serve_refuses_a_database_password_others_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("tenure.toml");
    std::fs::write(&file, format!("data = {data:?}\ndatabase = \"postgres://tenure:s3cret@127.0.0.1:1/tenure\"\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(support::tenure_bin()).arg("serve").arg("--config").arg(&file).output().expect("run tenure serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {}", file.display())), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
