//! What a person fetches to trust sluice's CA: the trust page (how to
//! install the certificate on each platform), the certificate as PEM and
//! as DER. One rendering, answered by the admin server (`/ca`,
//! `/ca.pem`, `/ca.der`, without the admin token) and by the proxy port
//! for [`super::TRUST_HOST`] (`http://sluice.invalid/`, as mitmproxy's
//! `mitm.it`).
//!
//! Invariants: only the certificate is ever served, never the key (the
//! [`Ca`] gives this module no way to reach it); the page is a static
//! template (`trust.html`) whose only variable parts are the CA's
//! subject, fingerprint and validity, each HTML-escaped and substituted
//! in one pass (a value is never scanned for placeholders); the page has
//! no script and is served with a CSP that allows none, nor any fetch:
//! only its one inline style block, by hash.

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::ca::{Ca, CaSummary};

/// The page's template: placeholders are `{{name}}`.
const PAGE: &str = include_str!("trust.html");

/// What was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustItem {
    /// The HTML page.
    Page,
    /// The certificate, PEM.
    Pem,
    /// The certificate, DER.
    Der,
}

impl TrustItem {
    /// The item a path names: `/` and `/ca` the page, `/ca.pem`,
    /// `/ca.der` the certificate (the query is ignored).
    pub fn of_path(path: &str) -> Option<TrustItem> {
        match path {
            "/" | "/ca" => Some(TrustItem::Page),
            "/ca.pem" => Some(TrustItem::Pem),
            "/ca.der" => Some(TrustItem::Der),
            _ => None,
        }
    }
}

/// One answer: its headers and its body, for whichever server sends it.
#[derive(Debug, Clone)]
pub struct TrustAnswer {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TrustAnswer {
    /// A 200 response with these headers and `body(bytes)`.
    pub fn into_response<B>(self, body: impl FnOnce(Bytes) -> B) -> http::Response<B> {
        let mut resp = http::Response::new(body(self.body));
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// The answer for `item`, from `ca`.
pub fn answer(ca: &Ca, item: TrustItem) -> TrustAnswer {
    let mut headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(&mut headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // The certificate can change (a new data folder, another team CA):
    // always asked again, never a stale one.
    set(&mut headers, header::CACHE_CONTROL, "no-cache");
    let body = match item {
        TrustItem::Page => {
            set(
                &mut headers,
                header::CONTENT_TYPE,
                "text/html; charset=utf-8",
            );
            if let Ok(v) = HeaderValue::from_str(&page_csp()) {
                headers.insert(header::CONTENT_SECURITY_POLICY, v);
            }
            set(&mut headers, header::X_FRAME_OPTIONS, "DENY");
            set(&mut headers, header::REFERRER_POLICY, "no-referrer");
            Bytes::from(page(ca.summary()))
        }
        TrustItem::Pem => {
            set(&mut headers, header::CONTENT_TYPE, "application/x-pem-file");
            set(
                &mut headers,
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sluice-ca.pem\"",
            );
            Bytes::copy_from_slice(ca.cert_pem().as_bytes())
        }
        // No Content-Disposition: a browser that knows the type (Firefox,
        // Android) offers to install it rather than saving a file.
        TrustItem::Der => {
            set(
                &mut headers,
                header::CONTENT_TYPE,
                "application/x-x509-ca-cert",
            );
            Bytes::copy_from_slice(ca.cert_der().as_ref())
        }
    };
    TrustAnswer { headers, body }
}

/// The trust page for the CA `summary` describes.
pub fn page(summary: &CaSummary) -> String {
    let value = |name: &str| -> Option<&str> {
        Some(match name {
            "subject" => &summary.subject,
            "sha256" => &summary.sha256,
            "not_before" => &summary.not_before,
            "not_after" => &summary.not_after,
            _ => return None,
        })
    };
    let mut out = String::with_capacity(PAGE.len() + 256);
    let mut rest = PAGE;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after
            .find("}}")
            .and_then(|close| Some((close, value(&after[..close])?)))
        {
            Some((close, v)) => {
                escape_into(&mut out, v);
                rest = &after[close + 2..];
            }
            // Not a placeholder: kept as written.
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` with `& < > " '` as entities, safe in element text and in
/// quoted attributes.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The page's policy: nothing may load or run but its own style block
/// (allowed by its hash, so an injected `<style>` would not apply
/// either); links to `/ca.pem` and `/ca.der` are navigations, which a CSP
/// does not restrict.
fn page_csp() -> String {
    format!(
        "default-src 'none'; style-src '{}'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        style_hash()
    )
}

/// `sha256-...` of the template's one `<style>` block.
fn style_hash() -> String {
    let style = PAGE
        .split_once("<style>")
        .and_then(|(_, s)| s.split_once("</style>"))
        .map_or("", |(s, _)| s);
    let digest = Sha256::digest(style.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(subject: &str) -> CaSummary {
        CaSummary {
            subject: subject.into(),
            sha256: "AB:CD".into(),
            not_before: "Jan  1 00:00:00 2026 +00:00".into(),
            not_after: "Jan  1 00:00:00 2036 +00:00".into(),
            created: false,
        }
    }

    #[test]
    fn values_are_escaped_and_never_read_as_placeholders() {
        let p = page(&summary("CN=<script>alert('x')</script> & {{sha256}}"));
        assert!(!p.contains("<script"), "{p}");
        assert!(p.contains("CN=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; {{sha256}}"));
        assert!(p.contains(r#"<td id="sha256" class="fp">AB:CD</td>"#));
        assert!(p.contains("Jan  1 00:00:00 2036 +00:00"));
        assert!(!p.contains("{{not_after}}"));
    }

    #[test]
    fn the_template_has_no_script_one_style_and_every_platform() {
        assert!(!PAGE.to_ascii_lowercase().contains("<script"));
        let handler = regex::Regex::new(r"(?i)\son[a-z]+\s*=").unwrap();
        assert!(
            !handler.is_match(PAGE),
            "no inline event handler attributes"
        );
        assert_eq!(PAGE.matches("<style>").count(), 1);
        assert!(
            !PAGE.contains("style=\""),
            "inline style attributes need 'unsafe-inline'"
        );
        for needle in [
            "/usr/local/share/ca-certificates/sluice.crt",
            "update-ca-certificates",
            "/etc/pki/ca-trust/source/anchors/",
            "update-ca-trust",
            "security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain",
            "certutil -addstore root",
            "security.enterprise_roots.enabled",
            "certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n sluice -i sluice-ca.pem",
            "network_security_config",
            "Certificate Trust Settings",
            "keytool -importcert -cacerts -alias sluice -file",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "certifi",
            "NODE_EXTRA_CA_CERTS",
            "--cacert",
            "CURL_CA_BUNDLE",
            "http.sslCAInfo",
            "href=\"/ca.pem\"",
            "href=\"/ca.der\"",
        ] {
            assert!(PAGE.contains(needle), "the trust page lacks {needle}");
        }
    }

    #[test]
    fn the_policy_allows_the_style_block_by_hash_and_nothing_else() {
        let csp = page_csp();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("unsafe"));
        assert!(!csp.contains("script-src"));
        assert_eq!(style_hash().len(), "sha256-".len() + 44);
    }

    #[test]
    fn paths_name_items() {
        assert_eq!(TrustItem::of_path("/"), Some(TrustItem::Page));
        assert_eq!(TrustItem::of_path("/ca"), Some(TrustItem::Page));
        assert_eq!(TrustItem::of_path("/ca.pem"), Some(TrustItem::Pem));
        assert_eq!(TrustItem::of_path("/ca.der"), Some(TrustItem::Der));
        assert_eq!(TrustItem::of_path("/ca-key.pem"), None);
        assert_eq!(TrustItem::of_path("/favicon.ico"), None);
    }

    #[test]
    fn answers_carry_their_types_and_never_the_key() {
        let ca = Ca::load(&super::super::CaSource::Memory).unwrap();
        let pem = answer(&ca, TrustItem::Pem);
        assert_eq!(pem.headers[header::CONTENT_TYPE], "application/x-pem-file");
        assert_eq!(
            pem.headers[header::CONTENT_DISPOSITION],
            "attachment; filename=\"sluice-ca.pem\""
        );
        assert_eq!(&pem.body[..], ca.cert_pem().as_bytes());
        let der = answer(&ca, TrustItem::Der);
        assert_eq!(
            der.headers[header::CONTENT_TYPE],
            "application/x-x509-ca-cert"
        );
        assert_eq!(&der.body[..], ca.cert_der().as_ref());
        let html = answer(&ca, TrustItem::Page);
        assert!(html.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"));
        let text = String::from_utf8(html.body.to_vec()).unwrap();
        assert!(text.contains(&ca.summary().sha256));
        for a in [&pem, &der, &html] {
            let body = String::from_utf8_lossy(&a.body);
            assert!(!body.contains("PRIVATE KEY"));
        }
    }
}
