//! The dashboard at `/`: server-rendered HTML, charts drawn as SVG, and a
//! little plain JavaScript (`static/app.js`) that refreshes the page every few
//! seconds and drives the buttons through the same `/v1` API. No front-end
//! build step.
//!
//! It uses the API's tokens: `/login?token=…` (the link `plimsoll serve`
//! prints) or the login form sets an HttpOnly, SameSite=Strict cookie. Every
//! response carries a strict Content-Security-Policy (own scripts only, no
//! framing); the buttons' API calls are checked to come from the
//! dashboard's own origin (see [`crate::auth`]).
//!
//! Nothing a page shows may make it fail: times are formatted for any
//! number Redis may hold (see [`html::fmt_time`]), and a bad query is
//! answered with the error page and its status, never a panic.

mod chart;
mod html;
mod memory;

use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use plimsoll::{JobId, JobState};
use serde::Deserialize;

use crate::api::jobs::JobView;
use crate::api::queues::{self, QueueView};
use crate::auth;
use crate::intake::spool_view::spool_view;
use crate::state::AppState;
pub use html::escape;
use html::{Page, fmt_rate, human_bytes};
use memory::{families_section, memory_section, memory_summary};

const APP_JS: &str = include_str!("../../static/app.js");
const APP_CSS: &str = include_str!("../../static/app.css");

/// Jobs listed per page.
const PAGE_SIZE: usize = 50;

/// The dashboard's routes.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/queues/{queue}", get(queue_page))
        .route("/queues/{queue}/jobs/{id}", get(job_page))
        .route_layer(middleware::from_fn_with_state(state, auth::require_login));
    Router::new()
        .route("/login", get(login_page).post(login_form))
        .route("/logout", get(logout))
        .route(
            "/static/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .merge(pages)
        .layer(middleware::from_fn(auth::dashboard_headers))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

async fn login_page(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    match query.token {
        Some(token) => login(&state, &token),
        None => login_html(None),
    }
}

async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginQuery>,
) -> Response {
    // Another site must not log a browser in with a token of its choosing
    // (the browser would then act as that account on this dashboard). A
    // form post from a browser always says where it comes from.
    if let Err(why) = auth::same_origin(&headers, state.config().http.public_origin.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            login_html(Some(&format!("Refused: {why}."))),
        )
            .into_response();
    }
    login(&state, form.token.as_deref().unwrap_or(""))
}

fn login(state: &AppState, token: &str) -> Response {
    if !auth::token_matches(state.tokens(), token) {
        return (
            StatusCode::UNAUTHORIZED,
            login_html(Some("That token is not valid.")),
        )
            .into_response();
    }
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        auth::COOKIE
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn login_html(error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"bad\">{}</p>", escape(e)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Plimsoll · log in</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main>\
         <h1>Plimsoll</h1><section class=\"card\"><form method=\"post\" action=\"/login\">\
         <p>The API token (from the configuration, or printed by <code>plimsoll serve</code>):</p>\
         <input type=\"password\" name=\"token\" size=\"40\" autofocus> <button>Log in</button>{error}\
         </form></section></main></body></html>"
    ))
    .into_response()
}

async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("plimsoll_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// Whole page, or just the inside of `<main>` for the live refresh.
fn respond(headers: &HeaderMap, page: Page) -> Response {
    if headers.contains_key("x-plimsoll-partial") {
        Html(page.body).into_response()
    } else {
        Html(page.render()).into_response()
    }
}

fn error_page(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let mut page = Page::new("Error");
    page.push(&format!("<p class=\"bad\">{}</p>", escape(message)));
    (status, respond(headers, page)).into_response()
}

async fn overview(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let mut page = Page::new("Overview");
    page.push("<h1>Overview</h1>");

    page.push("<h2>Redis memory</h2>");
    match state.guard() {
        Some(guard) => page.push(&memory_section(guard)),
        None => match crate::redis_memory::redis_memory(&state).await {
            Ok(memory) => page.push(&format!(
                "<section class=\"card\">{}<p class=\"muted\">The memory guard is switched off \
                 (guard.disabled): no history, forecast or alerts.</p></section>",
                memory_summary(memory.used_memory, memory.maxmemory)
            )),
            Err(err) => page.push(&format!(
                "<section class=\"card\"><p class=\"bad\">Redis cannot be read: {}</p></section>",
                escape(err.message())
            )),
        },
    }

    page.push("<h2>Queues</h2>");
    match state.queue_names().await {
        Ok(names) => {
            let mut views = Vec::new();
            for name in names {
                match queues::queue_view(&state, &name).await {
                    Ok(view) => views.push(view),
                    Err(err) => page.push(&format!(
                        "<p class=\"bad\">{}: {}</p>",
                        escape(&name),
                        escape(err.message())
                    )),
                }
            }
            page.push(&queues_table(&views));
        }
        Err(err) => page.push(&format!("<p class=\"bad\">{}</p>", escape(err.message()))),
    }

    if let Some(guard) = state.guard() {
        page.push("<h2>Memory by key family</h2>");
        page.push(&families_section(guard));
    }

    page.push("<h2>Cache</h2>");
    page.push(&cache_card(&state.cache().stats()));

    page.push("<h2>Webhook spool</h2>");
    page.push(&spool_card(&state));
    respond(&headers, page)
}

/// Quarantined webhooks listed on the overview at most.
const QUARANTINE_LISTED: usize = 20;

/// The spool: what waits for Redis, and what Redis refused for good.
fn spool_card(state: &AppState) -> String {
    let spool = spool_view(state);
    let mut card = format!(
        "<section class=\"card\" id=\"spool\"><p><span class=\"{}\">{} webhooks waiting for Redis</span> · {} of {} ({:.0}%)</p>",
        if spool.records == 0 {
            "ok"
        } else if spool.filling {
            "bad"
        } else {
            "warn"
        },
        spool.records,
        human_bytes(spool.bytes),
        human_bytes(spool.max_bytes),
        spool.fill * 100.0
    );
    card.push_str(&format!(
        "<p id=\"quarantine\"><span class=\"{}\">{} webhooks in quarantine</span> (refused by Redis for good; \
         <code>GET /v1/spool/quarantine</code>, then <code>POST /v1/spool/quarantine/retry</code> or <code>…/purge</code>){}</p>",
        if spool.quarantined == 0 { "ok" } else { "bad" },
        spool.quarantined,
        if spool.quarantine_full { " · full: replay waits" } else { "" }
    ));
    let listed = state.spool().quarantine().list(0, QUARANTINE_LISTED);
    if !listed.is_empty() {
        card.push_str(
            "<table><tr><th>Queue</th><th>Identity</th><th class=\"num\">Bytes</th><th>Reason</th><th>Payload</th></tr>",
        );
        for q in listed {
            card.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&q.queue),
                escape(q.identity.as_deref().unwrap_or("-")),
                q.payload_bytes,
                escape(&q.reason),
                escape(&String::from_utf8_lossy(&q.preview[..q.preview.len().min(80)]))
            ));
        }
        card.push_str("</table>");
    }
    card.push_str("</section>");
    card
}

fn cache_card(stats: &plimsoll::CacheStats) -> String {
    let state = stats.breaker.state;
    let class = match state {
        plimsoll::BreakerState::Closed => "ok",
        plimsoll::BreakerState::HalfOpen => "warn",
        plimsoll::BreakerState::Open => "bad",
    };
    let errors = stats.redis_errors;
    format!(
        "<section class=\"card\" id=\"breakers\"><table><tr><th>Endpoint</th><th>Breaker</th>\
         <th class=\"num\">Hits</th><th class=\"num\">Misses</th><th class=\"num\">Served without Redis</th>\
         <th class=\"num\">Redis errors</th><th class=\"num\">Opened</th></tr>\
         <tr data-breaker=\"{state}\"><td>Redis</td><td><span class=\"pill {class}\">{state}</span></td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td></tr></table></section>",
        stats.local_hits + stats.redis_hits + stats.stale_hits,
        stats.misses,
        stats.fallbacks + stats.stale_hits,
        errors.timeout
            + errors.connection
            + errors.unavailable
            + errors.out_of_memory
            + errors.other,
        stats.breaker.opened,
        state = state.as_str(),
    )
}

fn queues_table(views: &[QueueView]) -> String {
    if views.is_empty() {
        return "<p class=\"muted\">No queues yet. Enqueue a job through the API, or configure a webhook source.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"queues\"><tr><th>Queue</th><th class=\"num\">Waiting</th><th class=\"num\">Scheduled</th>\
         <th class=\"num\">Active</th><th class=\"num\">Dead</th><th class=\"num\">Enqueued/s</th>\
         <th class=\"num\">Completed/s</th><th class=\"num\">Failed/s</th><th class=\"num\">Memory</th><th></th></tr>",
    );
    for v in views {
        let name = escape(&v.name);
        out.push_str(&format!(
            "<tr data-queue=\"{name}\"><td><a href=\"/queues/{url}\">{name}</a>{paused}{push}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num {dead_class}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            v.counts.waiting,
            v.counts.scheduled,
            v.counts.active,
            v.counts.dead,
            fmt_rate(v.rates.enqueued_per_s),
            fmt_rate(v.rates.completed_per_s),
            fmt_rate(v.rates.failed_per_s),
            human_bytes(v.memory_bytes),
            pause_button(v),
            url = html::url_segment(&v.name),
            paused = if v.paused { " <span class=\"pill warn\">paused</span>" } else { "" },
            push = v
                .push_url
                .as_deref()
                .map(|u| format!(" <span class=\"pill\" title=\"{}\">push</span>", escape(u)))
                .unwrap_or_default(),
            dead_class = if v.counts.dead > 0 { "bad" } else { "" },
        ));
    }
    out.push_str("</table>");
    out
}

fn pause_button(v: &QueueView) -> String {
    let url = html::url_segment(&v.name);
    if v.paused {
        format!(
            "<button data-action=\"POST /v1/queues/{url}/resume\" data-done=\"Resumed\">Resume</button>"
        )
    } else {
        format!(
            "<button data-action=\"POST /v1/queues/{url}/pause\" data-done=\"Paused\">Pause</button>"
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    state: Option<String>,
    #[serde(default)]
    offset: usize,
    /// Job id to find.
    find: Option<String>,
}

async fn queue_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<QueueQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(find) = query
        .find
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        return Redirect::to(&format!(
            "/queues/{}/jobs/{}",
            html::url_segment(&name),
            html::url_segment(find)
        ))
        .into_response();
    }
    let view = match queues::queue_view(&state, &name).await {
        Ok(view) => view,
        Err(err) => return error_page(&headers, err.status(), err.message()),
    };
    let job_state = match query.state.as_deref().unwrap_or("waiting") {
        "scheduled" => JobState::Scheduled,
        "active" => JobState::Active,
        "completed" => JobState::Completed,
        "dead" => JobState::Dead,
        _ => JobState::Waiting,
    };
    let url = html::url_segment(&name);
    let mut page = Page::new(&format!("Queue {name}"));
    page.push(&format!(
        "<h1>Queue {}{}</h1>",
        escape(&name),
        if view.paused {
            " <span class=\"pill warn\">paused</span>"
        } else {
            ""
        }
    ));
    page.push(&format!(
        "<section class=\"card grid\">\
         <div><div class=\"muted\">Waiting</div><div class=\"figure\">{}</div></div>\
         <div><div class=\"muted\">Scheduled</div><div class=\"figure\">{}</div></div>\
         <div><div class=\"muted\">Active</div><div class=\"figure\">{}</div></div>\
         <div><div class=\"muted\">Dead</div><div class=\"figure\">{}</div></div>\
         <div><div class=\"muted\">Completed/s</div><div class=\"figure\">{}</div></div>\
         <div><div class=\"muted\">Memory</div><div class=\"figure\">{}</div></div></section>",
        view.counts.waiting,
        view.counts.scheduled,
        view.counts.active,
        view.counts.dead,
        fmt_rate(view.rates.completed_per_s),
        human_bytes(view.memory_bytes),
    ));
    page.push(&format!(
        "<p>{} <form class=\"inline\" method=\"get\" action=\"/queues/{url}\">\
         <input type=\"text\" name=\"find\" placeholder=\"job id\" size=\"10\"> <button>Find</button></form></p>",
        pause_button(&view)
    ));
    let mut tabs = String::from("<p class=\"tabs\">");
    for s in ["waiting", "scheduled", "active", "dead", "completed"] {
        let class = if s == job_state.as_str() {
            " class=\"current\""
        } else {
            ""
        };
        tabs.push_str(&format!(
            "<a{class} href=\"/queues/{url}?state={s}\">{s}</a>"
        ));
    }
    tabs.push_str("</p>");
    page.push(&tabs);
    if job_state == JobState::Dead && view.counts.dead > 0 {
        page.push(&format!(
            "<p><button data-action=\"POST /v1/queues/{url}/dead/retry\" data-body='{{\"all\":true}}' \
             data-done=\"Dead jobs sent back\">Retry all dead</button> \
             <button class=\"danger\" data-action=\"POST /v1/queues/{url}/dead/purge\" data-body='{{\"all\":true}}' \
             data-confirm=\"Delete every dead job of this queue for good?\" data-done=\"Dead jobs deleted\">Purge all dead</button></p>"
        ));
    }
    let queue = match state.queue(&name) {
        Ok(queue) => queue,
        Err(err) => return error_page(&headers, err.status(), err.message()),
    };
    let jobs = match queue.jobs(job_state, query.offset, PAGE_SIZE).await {
        Ok(jobs) => Ok(jobs),
        Err(err) if err.kind() == plimsoll::ErrorKind::InvalidInput => {
            return error_page(&headers, StatusCode::BAD_REQUEST, err.message());
        }
        Err(err) => Err(err),
    };
    match jobs {
        Ok(jobs) if jobs.is_empty() => {
            page.push(&format!("<p class=\"muted\">No {job_state} jobs.</p>"))
        }
        Ok(jobs) => {
            page.push(
                "<table id=\"jobs\"><tr><th>Id</th><th>Priority</th><th class=\"num\">Attempts</th>\
                 <th>Enqueued</th><th>When</th><th>Last error</th><th></th></tr>",
            );
            for job in &jobs {
                page.push(&format!(
                    "<tr data-job=\"{id}\"><td><a href=\"/queues/{url}/jobs/{id}\">{id}</a></td><td>{}</td>\
                     <td class=\"num\">{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    job.priority,
                    job.attempts,
                    job.max_attempts,
                    html::fmt_time(job.enqueued_at_ms),
                    job.state_time_ms.map(html::fmt_time).unwrap_or_default(),
                    escape(job.last_error.as_deref().unwrap_or("")),
                    job_buttons(&url, job.id, job.state),
                    id = job.id,
                ));
            }
            page.push("</table>");
            if jobs.len() == PAGE_SIZE {
                page.push(&format!(
                    "<p><a href=\"/queues/{url}?state={}&offset={}\">Next page</a></p>",
                    job_state.as_str(),
                    query.offset.saturating_add(PAGE_SIZE)
                ));
            }
        }
        Err(err) => page.push(&format!(
            "<p class=\"bad\">{}</p>",
            escape(&err.to_string())
        )),
    }
    respond(&headers, page)
}

fn job_buttons(url: &str, id: JobId, state: JobState) -> String {
    match state {
        JobState::Dead => format!(
            "<button data-action=\"POST /v1/queues/{url}/jobs/{id}/retry\" data-done=\"Job {id} sent back\">Retry</button> \
             <button class=\"danger\" data-action=\"POST /v1/queues/{url}/dead/purge\" data-body='{{\"ids\":[{id}]}}' \
             data-confirm=\"Delete job {id} for good?\" data-done=\"Job {id} deleted\">Purge</button>"
        ),
        JobState::Waiting | JobState::Scheduled | JobState::Active => format!(
            "<button class=\"danger\" data-action=\"DELETE /v1/queues/{url}/jobs/{id}\" \
             data-confirm=\"Cancel job {id}?\" data-done=\"Job {id} cancelled\">Cancel</button>"
        ),
        JobState::Completed => String::new(),
    }
}

async fn job_page(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not a job id"),
        );
    };
    let queue = match state.queue(&name) {
        Ok(queue) => queue,
        Err(err) => return error_page(&headers, err.status(), err.message()),
    };
    let job = match queue.job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                &format!("No job {id} in queue {name}: it may have finished and been removed."),
            );
        }
        Err(err) => return error_page(&headers, StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    };
    let url = html::url_segment(&name);
    let view = JobView::new(&name, job.clone());
    let payload = match &view.payload {
        Some(json) => serde_json::to_string_pretty(json).unwrap_or_default(),
        None => format!(
            "(not JSON; base64)\n{}",
            view.payload_base64.as_deref().unwrap_or("")
        ),
    };
    let mut page = Page::new(&format!("Job {id}"));
    page.push(&format!(
        "<h1>Job {id} <span class=\"pill\">{}</span></h1><p><a href=\"/queues/{url}\">← queue {}</a></p>",
        job.state,
        escape(&name)
    ));
    page.push(&format!(
        "<section class=\"card\"><table>\
         <tr><th>Priority</th><td>{}</td></tr><tr><th>Attempts</th><td>{} of {}</td></tr>\
         <tr><th>Timeout</th><td>{:?}</td></tr><tr><th>Enqueued</th><td>{}</td></tr>\
         <tr><th>{}</th><td>{}</td></tr><tr><th>Worker</th><td>{}</td></tr>\
         <tr><th>Last error</th><td>{}</td></tr><tr><th>Stored</th><td>{}</td></tr></table>\
         <p>{}</p></section>",
        job.priority,
        job.attempts,
        job.max_attempts,
        Duration::from_millis(u64::from(job.timeout_ms)),
        html::fmt_time(job.enqueued_at_ms),
        match job.state {
            JobState::Scheduled => "Due",
            JobState::Dead => "Died",
            JobState::Completed => "Completed",
            JobState::Active => "Lease until",
            JobState::Waiting => "Waiting since",
        },
        job.state_time_ms
            .map(html::fmt_time)
            .unwrap_or_else(|| html::fmt_time(job.enqueued_at_ms)),
        escape(job.worker.as_deref().unwrap_or("—")),
        escape(job.last_error.as_deref().unwrap_or("—")),
        human_bytes(job.stored_bytes as u64),
        job_buttons(&url, job.id, job.state),
    ));
    page.push(&format!("<h2>Payload</h2><pre>{}</pre>", escape(&payload)));
    respond(&headers, page)
}
