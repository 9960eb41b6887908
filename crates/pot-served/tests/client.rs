//! The client against a scripted local HTTP server: retries on 503 and 429 with backoff, gives up
//! with the server's words after the last attempt, says when a key is wanted, and sends the key
//! only as a header.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pot_served::{Client, ClientOptions, ServedError};

/// Serves the scripted (status, body) answers in order, one connection each; records requests.
fn scripted(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (status, body) in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).unwrap();
            log.lock().unwrap().push(head);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

fn options(key: Option<&str>) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        retries: 2,
        api_key: key.map(str::to_owned),
        backoff: Duration::from_millis(10),
    }
}

#[test]
fn busy_and_failing_servers_are_retried_then_reported() {
    let (url, seen) = scripted(vec![
        (503, r#"{"error":"loading"}"#),
        (429, r#"{"error":"slow down"}"#),
        (200, r#"{"data":[{"id":"m"}]}"#),
    ]);
    let client = Client::new(&format!("{url}/v1"), options(Some("s3cret"))).unwrap();
    let v = client.get("/v1/models").unwrap();
    assert_eq!(v["data"][0]["id"], "m");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|h| h.contains("Bearer s3cret")));
    assert!(seen[0].starts_with("GET /v1/models"));

    let (url, _) = scripted(vec![(500, "boom"), (500, "boom"), (500, "still boom")]);
    let client = Client::new(&url, options(None)).unwrap();
    let err = client.get("/v1/models").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ServedError::Http { .. }));
    assert!(
        text.contains("HTTP 500") && text.contains("still boom") && text.contains("3 attempts"),
        "{text}"
    );

    let (url, _) = scripted(vec![(401, r#"{"error":"no key"}"#)]);
    let err = Client::new(&url, options(None))
        .unwrap()
        .get("/v1/models")
        .unwrap_err();
    assert!(err.to_string().contains("POT_API_KEY"), "{err}");

    // A 200 that is not JSON (a proxy's HTML page, say) is an error naming it, not retried.
    let (url, _) = scripted(vec![(200, "<html>gateway</html>")]);
    let err = Client::new(&url, options(None))
        .unwrap()
        .get("/v1/models")
        .unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");

    assert!(Client::new("ftp://x", options(None)).is_err());
}

/// An answer longer than the request can legitimately return is refused at once: one request,
/// no retries (it would come again), and a message that says why.
#[test]
fn an_answer_longer_than_its_bound_is_refused_without_retries() {
    let huge: &'static str =
        Box::leak(format!("{{\"x\":\"{}\"}}", "a".repeat(50_000)).into_boxed_str());
    let (url, seen) = scripted(vec![(200, huge), (200, huge), (200, huge)]);
    let client = Client::new(&url, options(None)).unwrap();
    let err = client
        .post_bounded("/v1/completions", &serde_json::json!({}), 10_000)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("longer than 10000 bytes") && text.contains("not retried"),
        "{text}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The same answer within its bound is read.
    let v = client
        .post_bounded("/v1/completions", &serde_json::json!({}), 100_000)
        .unwrap();
    assert_eq!(v["x"].as_str().unwrap().len(), 50_000);
}

#[test]
fn a_prompts_bound_grows_with_its_length_and_alternatives() {
    let short = pot_served::api::response_bound("Hello", 20);
    let long = pot_served::api::response_bound(&"word ".repeat(400), 20);
    assert!(short < long && long < pot_served::client::MAX_RESPONSE_BYTES);
    assert!(pot_served::api::response_bound(&"x".repeat(600), 20) <= 17 << 20);
}
