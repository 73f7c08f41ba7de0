//! Showing connection strings without their secrets.

/// A connection URL with its password replaced by `***`, for logs and messages: the
/// `user:password@` part of any `scheme://` URL, and `password=` parameters of a URL's
/// query or of libpq's `key=value` form. Anything else is returned unchanged.
///
/// ```
/// assert_eq!(
///     toka_store::redact_url("postgres://toka:s3cret@db:5432/toka?schema=a"),
///     "postgres://toka:***@db:5432/toka?schema=a"
/// );
/// assert_eq!(toka_store::redact_url("host=db password=s3cret"), "host=db password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some((scheme, rest)) = url.split_once("://") {
        // Up to the query, and to the last `@` in it: a password with an unescaped `/` or
        // `@` is still hidden (a path with an `@` is then hidden too; better too much).
        let authority_end = rest.find('?').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                out = format!("{scheme}://{}:***{}", &authority[..colon], &rest[at..]);
            }
        }
    }
    // `password=` in a query string or a key=value string.
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(index) = rest.find("password=") {
        let at_boundary =
            index == 0 || matches!(rest.as_bytes()[index - 1], b'?' | b'&' | b' ' | b'\t');
        let value_start = index + "password=".len();
        redacted.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if at_boundary {
            let end = if let Some(quoted) = rest.strip_prefix('\'') {
                quoted.find('\'').map_or(rest.len(), |i| i + 2)
            } else {
                rest.find(['&', ' ', '\t']).unwrap_or(rest.len())
            };
            redacted.push_str("***");
            rest = &rest[end..];
        }
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("postgres://u:pw@h:5/db", "postgres://u:***@h:5/db"),
            ("postgresql://u:p@w@h/db", "postgresql://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=pw&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            ("host=h password='p w' user=u", "host=h password=*** user=u"),
            ("host=h password=pw", "host=h password=***"),
            ("mysql://u:pw@h/db", "mysql://u:***@h/db"),
            ("postgres://u:p/w@h/db?x=1", "postgres://u:***@h/db?x=1"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
