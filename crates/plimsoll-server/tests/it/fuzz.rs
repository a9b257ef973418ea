//! Property tests of the API with malformed JSON, wrong types, huge bodies and
//! bad signatures: the server answers every one with a JSON error that has a
//! stable code (never a 500, never plain text), and takes only valid input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll_server::intake::signature::sign;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::support::{TOKEN, TestServer, server};

const CONFIG: &str = "max_body = \"64KiB\"\n[hooks.github]\nsecret = \"fuzzing-secret\"\n";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs 200 cases of `test` against a server of its own. Not one static
/// server for all: a static is never dropped, so its redis-server would
/// outlive the test run (one leaked process per run).
fn run_cases<S: Strategy>(
    strategy: S,
    test: impl Fn(&Runtime, &TestServer, S::Value) -> Result<(), TestCaseError>,
) {
    let runtime = runtime();
    let server = runtime.block_on(server(CONFIG));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(err) = runner.run(&strategy, |value| test(&runtime, &server, value)) {
        panic!("{err}");
    }
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("payload".to_string()),
                    Just("priority".to_string()),
                    Just("delay_ms".to_string()),
                    Just("max_attempts".to_string()),
                    Just("timeout_ms".to_string()),
                    Just("idempotency_key".to_string()),
                    Just("payload_base64".to_string()),
                    Just("jobs".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: JSON values, truncated or garbled JSON, raw bytes, big strings.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        any_json().prop_map(|v| {
            let text = v.to_string();
            let cut = text.len() / 2;
            text.into_bytes()[..cut].to_vec()
        }),
        prop::collection::vec(any::<u8>(), 0..256),
        (1usize..200_000)
            .prop_map(|n| format!("{{\"payload\":\"{}\"}}", "z".repeat(n)).into_bytes()),
    ]
}

fn check(reply: &crate::support::Reply) -> Result<(), TestCaseError> {
    prop_assert!(
        reply.status != StatusCode::INTERNAL_SERVER_ERROR,
        "500 for a bad request: {}",
        reply.text
    );
    if !reply.status.is_success() {
        let code = reply.json["error"]["code"].as_str();
        prop_assert!(
            code.is_some_and(|c| !c.is_empty()),
            "not a JSON error: {} {}",
            reply.status,
            reply.text
        );
        prop_assert!(
            reply.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    Ok(())
}

#[test]
fn enqueue_survives_any_body() {
    run_cases((any_body(), any::<bool>()), |runtime, s, (body, bulk)| {
        let uri = if bulk {
            "/v1/queues/fuzz/jobs/bulk"
        } else {
            "/v1/queues/fuzz/jobs"
        };
        let request = Request::post(uri)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = runtime.block_on(s.send(request));
        check(&reply)?;
        if reply.status.is_success() {
            // Only a well-formed request is taken.
            let value: Value = serde_json::from_slice(&body).unwrap();
            prop_assert!(value.is_object());
        }
        Ok(())
    });
}

#[test]
fn intake_answers_401_to_every_wrong_signature() {
    run_cases(
        (any_body(), "[ -~]{0,80}"),
        |runtime, s, (body, signature)| {
            let request = Request::post("/hooks/github")
                .header("Content-Type", "application/json")
                .header("X-Hub-Signature-256", signature.clone())
                .body(Body::from(body.clone()))
                .unwrap();
            let reply = runtime.block_on(s.send(request));
            check(&reply)?;
            let right = sign(b"fuzzing-secret", &body, "sha256=");
            if signature != right && body.len() <= 64 * 1024 {
                prop_assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            }
            Ok(())
        },
    );
}

#[test]
fn queries_and_paths_survive_anything() {
    run_cases(
        (".{0,20}", ".{0,24}", ".{0,8}"),
        |runtime, s, (state, id, limit)| {
            let enc = |t: &str| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            for uri in [
                format!(
                    "/v1/queues/fuzz/jobs?state={}&limit={}",
                    enc(&state),
                    enc(&limit)
                ),
                format!("/v1/queues/fuzz/jobs/{}", enc(&id)),
                format!("/v1/queues/{}/dead", enc(&id)),
            ] {
                let request = Request::get(uri.as_str())
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .body(Body::empty())
                    .unwrap();
                let reply = runtime.block_on(s.send(request));
                check(&reply)?;
            }
            Ok(())
        },
    );
}

#[test]
fn a_valid_signature_is_accepted_for_any_json_body() {
    let runtime = runtime();
    let s = runtime.block_on(server(CONFIG));
    let body = json!({"any": ["thing", 1, null]}).to_string();
    let request = Request::post("/hooks/github")
        .header(
            "X-Hub-Signature-256",
            sign(b"fuzzing-secret", body.as_bytes(), "sha256="),
        )
        .body(Body::from(body))
        .unwrap();
    let reply = runtime.block_on(s.send(request));
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
}
