//! The `token` commands: mint, attenuate, inspect and revoke capability tokens.
//!
//! Minting and revoking need an initialised data directory (its root key and journal),
//! or its running node (`POST /tokens`, `POST /tokens/revoke`; see [`crate::remote`]): a
//! revocation through the node takes effect at once. Attenuating needs nothing but the
//! token (with `--node`, the node checks it first); inspecting decodes any token and,
//! given an initialised data directory, also checks its signature and revocation.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde_json::json;
use toka_tools::capability::MAX_TOKEN_BYTES;
use toka_tools::{Authority, Capability, Caveat, Denial};

use crate::cli::{AttenuateArgs, DataDir, InspectArgs, MintArgs, NodeArgs, RevokeArgs, block_on};
use crate::client::NodeClient;
use crate::remote::{Access, access};

pub(crate) fn mint(args: &MintArgs) -> anyhow::Result<ExitCode> {
    // Validate everything before touching the data directory.
    let caveats = parse_caveats(&args.caveats, args.ttl.as_deref())?;
    if args.node.node.is_none() {
        args.dir.require_initialised()?;
    }
    let journal = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => journal,
        Access::Online(client) => {
            let body = json!({ "caveats": texts(&caveats) });
            let minted = block_on(client.post("/tokens", &body))??;
            return print_token(&token_of(&client, &minted)?, args.json);
        }
    };
    let authority = authority_over(&args.dir, journal)?;
    let token = block_on(authority.issue(caveats, "cli"))?.context("minting")?;
    print_token(&token, args.json)
}

pub(crate) fn attenuate(args: &AttenuateArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let caveats = parse_caveats(&args.caveats, args.ttl.as_deref())?;
    if let Some(client) = crate::remote::explicit(&args.dir, &args.node)? {
        let body = json!({ "token": token.to_string(), "caveats": texts(&caveats) });
        let narrower = block_on(client.post("/tokens/attenuate", &body))??;
        return print_token(&token_of(&client, &narrower)?, args.json);
    }
    let narrower = caveats
        .iter()
        .fold(token, |token, caveat| token.attenuate(caveat));
    print_token(&narrower, args.json)
}

fn texts(caveats: &[Caveat]) -> Vec<String> {
    caveats.iter().map(ToString::to_string).collect()
}

/// The token in a node's `{"token", ...}` answer.
fn token_of(client: &NodeClient, answer: &serde_json::Value) -> anyhow::Result<Capability> {
    answer["token"]
        .as_str()
        .and_then(|text| Capability::parse(text).ok())
        .with_context(|| format!("the node at {} answered no readable token", client.url()))
}

pub(crate) fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let dir = match &args.data_dir {
        Some(data_dir) => {
            let dir = DataDir {
                data_dir: data_dir.clone(),
                key_file: args.key_file.clone(),
            };
            dir.require_initialised()?;
            Some(dir)
        }
        None => Some(DataDir {
            data_dir: PathBuf::from("./toka-data"),
            key_file: args.key_file.clone(),
        })
        .filter(|dir| dir.root_key_path().is_file()),
    };

    let caveats = token.caveats();
    let now = Timestamp::now();
    let expired = caveats.as_ref().ok().map(|caveats| {
        caveats
            .iter()
            .any(|c| matches!(c, Caveat::Expires(at) if *at <= now))
    });
    let check = dir
        .as_ref()
        .map(|dir| check(dir, &args.node, &token))
        .transpose()?;
    let signature_valid = check.as_ref().map(|check| match &check.verified {
        Ok(_) => true,
        // `verify` checks the signature chain, then parses the caveats: failing with the
        // very error the caveats give means the signature held.
        Err(denial) => caveats.as_ref().err() == Some(denial),
    });
    let revoked = check.as_ref().map(|check| check.revoked);
    let problem = caveats.is_err()
        || expired == Some(true)
        || signature_valid == Some(false)
        || revoked == Some(true);

    if args.json {
        let report = json!({
            "identifier": token.identifier(),
            "caveats": caveats.as_ref().ok().map(|cs| {
                cs.iter().map(ToString::to_string).collect::<Vec<_>>()
            }),
            "caveat_error": caveats.as_ref().err().map(|d| d.reason.clone()),
            "expired": expired,
            "checked": dir.is_some(),
            "data_dir": dir.as_ref().map(|d| d.data_dir.display().to_string()),
            "signature_valid": signature_valid,
            "revoked": revoked,
            // `null`: nothing wrong was found, but the signature was not checked.
            "valid": if problem { Some(false) } else { dir.is_some().then_some(true) },
        });
        println!("{report}");
    } else {
        println!("identifier  {}", token.identifier());
        match &caveats {
            Ok(caveats) if caveats.is_empty() => {
                println!("caveats     none (the token allows everything)");
            }
            Ok(caveats) => {
                for (i, caveat) in caveats.iter().enumerate() {
                    let label = if i == 0 { "caveats" } else { "" };
                    let note = match caveat {
                        Caveat::Expires(at) if *at <= now => "  (expired)",
                        _ => "",
                    };
                    println!("{label:<11} {caveat}{note}");
                }
            }
            Err(denial) => println!("caveats     not understood: {}", denial.reason),
        }
        match (&dir, signature_valid, revoked) {
            (Some(dir), Some(signature), Some(revoked)) => {
                println!(
                    "signature   {} (root key of {})",
                    if signature { "valid" } else { "INVALID" },
                    dir.data_dir.display()
                );
                println!("revoked     {}", if revoked { "YES" } else { "no" });
            }
            _ => {
                println!("signature   not checked (no initialised data dir: pass --data-dir)");
                println!("revoked     not checked");
            }
        }
    }
    Ok(if problem {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn revoke(args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let identifier = identifier_of(&args.id)?;
    if args.node.node.is_none() {
        args.dir.require_initialised()?;
    }
    let already = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => {
            let authority = authority_over(&args.dir, journal)?;
            let already = authority.is_revoked(&identifier);
            if !already {
                block_on(authority.revoke(&identifier, &args.reason))?
                    .with_context(|| format!("revoking {identifier}"))?;
            }
            already
        }
        Access::Online(client) => {
            let body = json!({ "identifier": identifier, "reason": args.reason });
            let answer = block_on(client.post("/tokens/revoke", &body))??;
            answer["already_revoked"].as_bool().unwrap_or(false)
        }
    };
    if args.json {
        println!(
            "{}",
            json!({ "identifier": identifier, "already_revoked": already })
        );
    } else if already {
        println!("token {identifier} was already revoked");
    } else {
        println!("revoked token {identifier} and every token attenuated from it");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an initialised data directory says about a token.
struct Check {
    /// `Authority::verify_signature`: signature and caveats, revocation aside.
    verified: Result<Vec<Caveat>, Denial>,
    /// Whether the journal records its identifier as revoked.
    revoked: bool,
}

fn check(dir: &DataDir, node: &NodeArgs, token: &Capability) -> anyhow::Result<Check> {
    match access(dir, node)? {
        Access::Offline(journal) => {
            let authority = authority_over(dir, journal)?;
            // `Authority::verify` refuses a revoked token before it looks at the
            // signature; to report both, check the signature on its own.
            let verified = authority.verify_signature(token);
            Ok(Check {
                verified,
                revoked: authority.is_revoked(token.identifier()),
            })
        }
        Access::Online(client) => {
            // The root key can be read while the node runs; the revocations are the
            // node's.
            let authority = root_authority(dir)?;
            let verified = authority.verify_signature(token);
            let revocations = block_on(client.get("/tokens/revocations"))??;
            let revoked = revocations.as_array().is_some_and(|list| {
                list.iter()
                    .any(|r| r["identifier"].as_str() == Some(token.identifier()))
            });
            Ok(Check { verified, revoked })
        }
    }
}

/// An authority over the data directory's root key only (no journal: it knows no
/// revocation), to check signatures while a node holds the journal.
fn root_authority(dir: &DataDir) -> anyhow::Result<Authority> {
    dir.require_initialised()?;
    let path = dir.root_key_path();
    let secret = zeroize::Zeroizing::new(
        std::fs::read(&path).with_context(|| format!("reading the root key {}", path.display()))?,
    );
    if secret.len() != 32 {
        bail!("the root key {} is not 32 bytes", path.display());
    }
    Ok(Authority::from_secret(&secret))
}

/// The authority of an initialised data directory over its opened journal.
fn authority_over(dir: &DataDir, journal: toka_store::SledJournal) -> anyhow::Result<Authority> {
    dir.require_initialised()?;
    let journal = Arc::new(journal);
    let key_path = dir.root_key_path();
    Authority::open(&key_path, journal)
        .with_context(|| format!("opening the authority of {}", dir.data_dir.display()))
}

fn print_token(token: &Capability, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let caveats = token
            .caveats()
            .map_err(|d| anyhow::anyhow!("reading the token's caveats: {}", d.reason))?;
        println!(
            "{}",
            json!({
                "token": token.to_string(),
                "identifier": token.identifier(),
                "caveats": caveats.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a token from the command line, or from standard input for `-`.
fn read_token(text: &str) -> anyhow::Result<Capability> {
    let owned;
    let text = if text == "-" {
        let mut buf = String::new();
        io::stdin()
            .lock()
            .take(MAX_TOKEN_BYTES as u64 + 2)
            .read_to_string(&mut buf)
            .context("reading the token from standard input")?;
        owned = buf;
        owned.as_str()
    } else {
        text
    };
    Capability::parse(text).map_err(|d| anyhow::anyhow!("cannot read the token: {}", d.reason))
}

/// The identifier named by `text`: a whole token's identifier, or an identifier as
/// tokens have them (a UUID, as `token inspect` and `audit tokens` show it). Anything
/// else (a damaged token, say) is refused without being echoed: revoking it would revoke
/// nothing while saying it did, and journal the text.
pub(crate) fn identifier_of(text: &str) -> anyhow::Result<String> {
    if let Ok(token) = Capability::parse(text) {
        return Ok(token.identifier().to_owned());
    }
    match uuid::Uuid::try_parse(text.trim()) {
        Ok(id) => Ok(id.hyphenated().to_string()),
        Err(_) => bail!(
            "neither a token nor a token identifier (a UUID, as `token inspect` or `audit \
             tokens` shows it); is the token complete?"
        ),
    }
}

/// Parses `--caveat` texts, plus the `expires` caveat of `--ttl`.
fn parse_caveats(texts: &[String], ttl: Option<&str>) -> anyhow::Result<Vec<Caveat>> {
    let mut caveats = texts
        .iter()
        .map(|text| {
            Caveat::parse(text.as_bytes()).map_err(|d| {
                let hint = if d.reason.starts_with("unknown caveat") {
                    " (known: tool, agent, expires, path-prefix, max-bytes, secret, model, max-tokens, budget-tokens, approval)"
                } else {
                    ""
                };
                anyhow::anyhow!("bad --caveat {text:?}: {}{hint}", d.reason)
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(ttl) = ttl {
        let secs = parse_ttl(ttl)?;
        // Whole seconds: the caveat reads `expires = 2030-01-01T00:00:00Z`.
        let at = i64::try_from(secs)
            .ok()
            .and_then(|secs| Timestamp::now().as_second().checked_add(secs))
            .and_then(|at| Timestamp::from_second(at).ok())
            .with_context(|| format!("--ttl {ttl:?} reaches past the year 9999"))?;
        caveats.push(Caveat::Expires(at));
    }
    Ok(caveats)
}

/// Parses a duration such as `30s`, `15m`, `1h`, `2d`, `1w` or `1h30m` into seconds.
fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "bad --ttl {text:?}: use a whole number and a unit, e.g. 30s, 15m, 1h, 2d, 1w or 1h30m"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        bail!("bad --ttl {text:?}: a token that expires at once is useless");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_sums() {
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("1h", 3_600),
            ("2d", 172_800),
            ("1w", 604_800),
            ("1h30m", 5_400),
        ] {
            assert_eq!(parse_ttl(text).unwrap(), secs, "{text}");
        }
        for text in [
            "",
            "1",
            "h",
            "1x",
            "-1h",
            "1.5h",
            "0s",
            "1 h",
            "1hh",
            "99999999999999999999s",
        ] {
            assert!(parse_ttl(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn caveats_parse_or_explain() {
        let caveats = parse_caveats(&["tool = fs.read".into()], Some("1h")).unwrap();
        assert_eq!(caveats.len(), 2);
        assert!(matches!(caveats[1], Caveat::Expires(at) if at > Timestamp::now()));
        let err = parse_caveats(&["colour = blue".into()], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("known:"), "{err}");
    }

    #[test]
    fn identifiers_come_from_whole_tokens_or_uuids_only() {
        let token = Authority::from_secret(b"0123456789abcdef0123456789abcdef")
            .mint([])
            .unwrap();
        let text = token.to_string();
        assert_eq!(identifier_of(&text).unwrap(), token.identifier());
        assert_eq!(
            identifier_of(&format!(" {} ", token.identifier())).unwrap(),
            token.identifier()
        );
        // A damaged token is refused, and the error does not echo it.
        for damaged in [
            &text[..text.len() - 1],
            &format!("{text}AA"),
            &format!("\"{text}\""),
        ] {
            let err = identifier_of(damaged).unwrap_err().to_string();
            assert!(!err.contains(&text[..20]), "{err}");
        }
        assert!(identifier_of("").is_err());
        assert!(identifier_of("some-id").is_err());
    }
}
