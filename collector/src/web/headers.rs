//! Security headers on every response (the dashboard, its assets, the sign-in page and the
//! API): a Content-Security-Policy that lets the page load only its own script, style sheet
//! and images and talk only to its own origin, so a value that slipped past escaping cannot
//! run script, load a remote resource or send data elsewhere; no framing (clickjacking), no
//! content-type sniffing, and no `Referer` (the `/?token=` address must not leak to another
//! site).
//!
//! The page has no inline script or style: bar widths are set through the CSSOM from
//! `data-width` (allowed by CSP). The one inline `<style>` is the sign-in page's, served
//! before the viewer may load `/assets/`; it is allowed by its hash, computed from the page
//! itself so the two cannot drift apart.

use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

const SIGN_IN_PAGE: &str = include_str!("assets/login.html");

/// `'sha256-…'` of the text of the first `<style>` element in `page`, as CSP hashes it.
fn style_hash(page: &str) -> Option<String> {
    let start = page.find("<style>")? + "<style>".len();
    let style = page.get(start..)?;
    let style = style.get(..style.find("</style>")?)?;
    let digest = Sha256::digest(style.as_bytes());
    Some(format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The policy: same origin only; inline code refused (but the sign-in page's style).
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let sign_in_style = style_hash(SIGN_IN_PAGE).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' {sign_in_style}; img-src 'self'; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
});

/// Adds the security headers to a response (keeping any the handler set itself).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let policy = HeaderValue::from_str(&CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let fixed: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in fixed {
        headers.entry(name).or_insert(value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_inline_code_but_hashes_the_sign_in_style() {
        let policy = CONTENT_SECURITY_POLICY.as_str();
        assert!(policy.starts_with("default-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        // echo -n '<the style text>' | openssl dgst -sha256 -binary | base64
        let hash = style_hash("<style>a{b:c}</style>");
        assert_eq!(
            hash.as_deref(),
            Some("'sha256-0cRUVYRKwNwnl1hkfkPGjkht16b039TjFdJzmXfFK2o='")
        );
        assert!(style_hash(SIGN_IN_PAGE).is_some_and(|hash| policy.contains(&hash)));
        assert_eq!(style_hash("no style"), None);
    }

    #[test]
    fn the_dashboard_assets_hold_no_inline_code() {
        for (name, text) in [
            ("index.html", include_str!("assets/index.html")),
            ("app.js", include_str!("assets/app.js")),
            ("operations.js", include_str!("assets/operations.js")),
            ("session.js", include_str!("assets/session.js")),
            ("history.js", include_str!("assets/history.js")),
        ] {
            for inline in ["style=\"", "<style", "onclick", "onload=", "javascript:"] {
                assert!(!text.contains(inline), "{name} holds {inline:?}");
            }
        }
        // Every script is a file of its own, none inline.
        let index = include_str!("assets/index.html");
        let scripts = ["app.js", "operations.js", "session.js", "history.js"];
        assert_eq!(index.matches("<script").count(), scripts.len());
        for script in scripts {
            assert!(index.contains(&format!("<script src=\"/assets/{script}\"></script>")));
        }
    }
}
