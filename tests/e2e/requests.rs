//! Request logging against a real `tenure serve`: every response names its
//! request (`Tenure-Request-Id`), every problem document carries the same id
//! as its `instance`, and the server logs each request exactly once under it.

use crate::support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use support::raw::{RawClient, Response, jws};
use support::{ServeOptions, Server};

/// The request id of a response, checked for form.
fn request_id(r: &Response) -> String {
    let id = r.header("tenure-request-id").expect("every response carries Tenure-Request-Id");
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id:?}");
    id
}

/// Asserts `r` is a problem document of `kind` that names its request.
fn assert_problem_names_request(r: &Response, status: u16, kind: &str) -> String {
    assert_eq!(r.status, status, "body: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.problem_type(), kind, "body: {}", String::from_utf8_lossy(&r.body));
    let id = request_id(r);
    assert_eq!(r.json()["instance"], format!("urn:tenure:request:{id}"), "body: {}", String::from_utf8_lossy(&r.body));
    id
}

/// The log without terminal colours (the server may write them to a file).
fn plain_log(server: &Server) -> String {
    let log = server.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The log lines that carry `id`, once the request's own line is there (it
/// is written before the response is sent; the wait covers a slow flush).
fn lines_of(server: &Server, id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = plain_log(server);
        let lines: Vec<String> = log.lines().filter(|l| l.contains(id)).map(str::to_string).collect();
        if lines.iter().any(|l| l.contains("tenure::acme::request")) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no request line for {id}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The one request line of `id`: exactly one line of the request target names it.
fn request_line(server: &Server, id: &str) -> String {
    let lines: Vec<String> = lines_of(server, id).into_iter().filter(|l| l.contains("tenure::acme::request")).collect();
    assert_eq!(lines.len(), 1, "one request line for {id}:\n{}", lines.join("\n"));
    lines.into_iter().next().unwrap_or_default()
}

fn assert_fields(line: &str, fields: &[&str]) {
    for field in fields {
        assert!(line.contains(field), "{field:?} missing from {line}");
    }
}

#[tokio::test]
async fn each_request_is_logged_once_under_the_id_its_answer_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(None));
    let mut client = RawClient::new(&server.directory_url(), &server.root_pem()).await;

    // A refused request: an unknown nonce on newAccount. Nothing else is
    // logged for it, so its one line is the only line with its id.
    let new_account = client.url("newAccount");
    let mut p = client.protected(&new_account).await;
    p["nonce"] = json!(B64.encode([7u8; 16]));
    let payload = json!({ "termsOfServiceAgreed": true }).to_string();
    let r = client.post_jws(&new_account, &jws(&client.key, &p, &payload)).await;
    let refused = assert_problem_names_request(&r, 400, "badNonce");
    let lines = lines_of(&server, &refused);
    assert_eq!(lines.len(), 1, "one line for a refused request:\n{}", lines.join("\n"));
    assert_fields(
        &lines[0],
        &[
            " INFO ",
            "method=POST",
            "path=\"/acme/new-account\"",
            "resource=new-account",
            "status=400",
            "problem=badNonce",
            "peer=127.0.0.1",
            "duration_ms=",
        ],
    );
    assert!(!lines[0].contains("account="), "no account is known yet: {}", lines[0]);

    // A success carries the header too, and its line has no problem.
    let r = client.get(&server.directory_url()).await;
    assert_eq!(r.status, 200);
    let ok = request_id(&r);
    assert_ne!(ok, refused, "each request has its own id");
    let line = request_line(&server, &ok);
    assert_fields(&line, &["method=GET", "path=\"/directory\"", "resource=directory", "status=200"]);
    assert!(!line.contains("problem="), "{line}");

    // A path no route names: 404, labelled unknown (not by its path).
    let base = server.directory_url().trim_end_matches("/directory").to_string();
    let r = client.get(&format!("{base}/acme/no-such-thing?token=secret")).await;
    let unknown = assert_problem_names_request(&r, 404, "malformed");
    let line = request_line(&server, &unknown);
    assert_fields(&line, &["resource=unknown", "status=404", "path=\"/acme/no-such-thing\""]);
    assert!(!line.contains("secret"), "no query string in the log: {line}");

    // Once authenticated, the request's lines name the account.
    client.register().await;
    let kid = client.kid.clone().expect("kid");
    let account = kid.rsplit('/').next().expect("account id").to_string();
    let r = client.post(&format!("{base}/acme/order/no-such-order"), "").await;
    let missing = assert_problem_names_request(&r, 404, "malformed");
    let line = request_line(&server, &missing);
    assert_fields(&line, &["resource=order", "status=404", "problem=malformed", &format!("account={account}")]);
}
