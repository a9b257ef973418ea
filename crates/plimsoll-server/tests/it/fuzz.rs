//! Property tests of the API with malformed JSON, wrong types, huge bodies and
//! bad signatures: the server answers every one with a JSON error that has a
//! stable code (never a 500, never plain text), and takes only valid input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll_server::signing::sign;
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

/// Numbers at and past every edge a field may have: the ends of every
/// integer type, floats, exponents.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(u64::MAX - 1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u32::MAX)),
        Just(json!(u32::MAX as u64 + 1)),
        Just(json!(u16::MAX)),
        Just(json!(u16::MAX as u64 + 1)),
        Just(json!(u8::MAX as u64 + 1)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(9_007_199_254_740_993u64)),
        any::<u64>().prop_map(Value::from),
    ]
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        edge_number(),
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
                    Just("run_at_ms".to_string()),
                    Just("max_attempts".to_string()),
                    Just("timeout_ms".to_string()),
                    Just("idempotency_window_ms".to_string()),
                    Just("ttl_ms".to_string()),
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

/// `delay_ms = 18446744073709551615` was taken and then crashed every page
/// that listed the job: every numeric field, at every edge, is either
/// refused with a JSON error or stored as a job every page can show.
#[test]
fn huge_numbers_in_every_numeric_field_never_give_a_5xx_nor_a_page_that_fails() {
    const FIELDS: [&str; 6] = [
        "delay_ms",
        "run_at_ms",
        "priority",
        "max_attempts",
        "timeout_ms",
        "idempotency_window_ms",
    ];
    run_cases(
        (
            prop::sample::select(&FIELDS[..]),
            edge_number(),
            any::<bool>(),
        ),
        |runtime, s, (field, number, bulk)| {
            let mut job = json!({"payload": {"n": 1}});
            job[field] = number.clone();
            if field == "idempotency_window_ms" {
                job["idempotency_key"] = json!("k");
            }
            let (uri, body) = if bulk {
                ("/v1/queues/fuzz/jobs/bulk", json!({"jobs": [job]}))
            } else {
                ("/v1/queues/fuzz/jobs", job)
            };
            let reply = runtime.block_on(s.call("POST", uri, Some(body)));
            check(&reply)?;
            prop_assert!(
                reply.status.is_success() || reply.status == StatusCode::BAD_REQUEST,
                "{field} = {number}: {} {}",
                reply.status,
                reply.text
            );
            for state in ["waiting", "scheduled"] {
                let page = runtime.block_on(
                    s.send(
                        Request::get(format!("/queues/fuzz?state={state}"))
                            .header("Cookie", format!("plimsoll_token={TOKEN}"))
                            .body(Body::empty())
                            .unwrap(),
                    ),
                );
                prop_assert_eq!(page.status, StatusCode::OK, "{} {}", field, number);
            }
            let ttl = runtime.block_on(s.call(
                "PUT",
                "/v1/cache/fuzz",
                Some(json!({"value": 1, "ttl_ms": number})),
            ));
            check(&ttl)?;
            Ok(())
        },
    );
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
        (".{0,20}", ".{0,24}", ".{0,8}", edge_number()),
        |runtime, s, (state, id, limit, number)| {
            let enc = |t: &str| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            for uri in [
                format!(
                    "/v1/queues/fuzz/jobs?state={}&limit={}",
                    enc(&state),
                    enc(&limit)
                ),
                format!("/v1/queues/fuzz/jobs?offset={number}&limit={number}"),
                format!("/v1/queues/fuzz/dead?offset={number}"),
                format!("/v1/queues/fuzz/jobs/{}", enc(&id)),
                format!("/v1/queues/{}/dead", enc(&id)),
            ] {
                let request = Request::get(uri.as_str())
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .header("Cookie", format!("plimsoll_token={TOKEN}"))
                    .body(Body::empty())
                    .unwrap();
                let reply = runtime.block_on(s.send(request));
                check(&reply)?;
            }
            // The dashboard answers with pages, not JSON: never a 5xx.
            for state in ["waiting", "scheduled", "active", "dead", "completed"] {
                let request = Request::get(format!("/queues/fuzz?state={state}&offset={number}"))
                    .header("Cookie", format!("plimsoll_token={TOKEN}"))
                    .body(Body::empty())
                    .unwrap();
                let reply = runtime.block_on(s.send(request));
                prop_assert!(
                    !reply.status.is_server_error(),
                    "{}: {}",
                    number,
                    reply.text
                );
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
