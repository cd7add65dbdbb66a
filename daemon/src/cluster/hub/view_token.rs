//! The district's board and report behind a token (`gridwatch hub --view-token-file`): they
//! list every box's incidents and the houses they are about, on a listener that must face the
//! internet for the workers' pages. The token is taken from `?token=`, an `Authorization:
//! Bearer` header, or the cookie a first visit with `?token=` sets, so the pages' own links (the
//! board's to the report, the report's CSV) need not carry it. Without a token file the pages
//! are open, as on a box without `[board] token`.

use super::web::Listener;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use std::sync::Arc;

/// The cookie a visit with the right `?token=` sets.
const COOKIE: &str = "gw_view";

/// Lets the request through when it carries the token (or none is asked for); 403 otherwise.
pub async fn check(State(web): State<Arc<Listener>>, request: Request, next: Next) -> Response {
    let Some(token) = web.view_token.as_deref() else { return next.run(request).await };
    let from_query = query_token(request.uri());
    let presented = from_query.clone().or_else(|| bearer(&request)).or_else(|| cookie(&request));
    if !presented.is_some_and(|presented| same(presented.as_bytes(), token.as_bytes())) {
        let page = "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><p>这些页面需要口令：打开 /board?token=…（向街道管理员索取）</p><p>These pages need the district's view token: /board?token=…</p>";
        return (StatusCode::FORBIDDEN, Html(page)).into_response();
    }
    let mut response = next.run(request).await;
    if from_query.is_some() {
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn query_token(uri: &axum::http::Uri) -> Option<String> {
    let axum::extract::Query(mut query) = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri).ok()?;
    query.remove("token")
}

fn bearer(request: &Request) -> Option<String> {
    request.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
}

fn cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_query_the_header_or_the_cookie() {
        let uri = |text: &str| text.parse::<axum::http::Uri>().unwrap();
        assert_eq!(query_token(&uri("/report?from=2026-12-01&token=a%2Bb%20c")).as_deref(), Some("a+b c"));
        assert_eq!(query_token(&uri("/report?from=2026-12-01")), None);
        let request = Request::builder()
            .header(header::COOKIE, "theme=dark; gw_view=secret-secret-1234")
            .header(header::AUTHORIZATION, "Bearer other")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(cookie(&request).as_deref(), Some("secret-secret-1234"));
        assert_eq!(bearer(&request).as_deref(), Some("other"));
        assert!(same(b"secret-secret-1234", b"secret-secret-1234"));
        assert!(!same(b"secret-secret-1234", b"secret-secret-1235") && !same(b"secret", b"secret-secret-1234"));
    }
}
