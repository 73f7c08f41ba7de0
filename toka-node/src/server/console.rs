//! The operator console at `/ui`: a static single-page app (plain HTML, ES modules, CSS
//! from `toka-node/ui/`, compiled into the binary) that shows the node through the public
//! API only.
//!
//! The page holds no data and needs no token: it asks the operator to paste one, keeps
//! it in the browser's `sessionStorage` (gone when the tab closes) and sends it as
//! `Authorization: Bearer` with each API call. So `/ui` and its assets are served without
//! authentication, and what the console shows is exactly what the token may read: a
//! panel whose route answers 403 (or 404, on a node without that route) is hidden.
//!
//! Every asset is answered with a strict `Content-Security-Policy` (scripts, styles and
//! connections from this origin only; no inline script or style, no frames, no forms
//! posted elsewhere), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
//! and `Cache-Control: no-cache` (the browser revalidates by `ETag`, so a new node binary
//! never serves a stale script).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::{ApiError, AppState};

/// The policy every console response carries.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One compiled-in file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The console's files, as `/ui/{name}` serves them (`index.html` also at `/ui`).
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/api.js"),
    },
    Asset {
        name: "pages.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/pages.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/charts.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../ui/style.css"),
    },
];

/// The console's routes: `GET /ui` (the page), `GET /ui/` (redirects to `/ui`) and
/// `GET /ui/{file}` (its scripts and style sheet). None needs a token.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

async fn asset(
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(file)) = file else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

/// An asset with its security headers; 304 when the browser's copy is current.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset.body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// A strong validator of `body`: FNV-1a over its bytes, quoted.
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_loads_is_served() {
        let index = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            assert!(
                index.contains(&format!("/ui/{}", asset.name))
                    || ASSETS
                        .iter()
                        .any(|a| a.body.contains(&format!("./{}", asset.name))),
                "{} is served but nothing loads it",
                asset.name
            );
        }
        // No inline script or style: the policy would block it.
        assert!(!index.contains("<script>"));
        assert!(!index.contains("style="));
    }

    #[test]
    fn etags_differ_with_the_body() {
        assert_ne!(etag("a"), etag("b"));
        assert_eq!(etag("a"), etag("a"));
    }
}
