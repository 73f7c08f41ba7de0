//! `toka-node secret set | list`, and the node's models: the vault of secrets (model API
//! keys) and the [`ModelHost`] built from the config's `[models.NAME]` tables.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use toka_store::Journal;
use toka_tools::Secret;
use toka_tools::model::{AnthropicClient, ModelHost, ModelTimeouts, OpenAiClient, RetryPolicy};
use toka_tools::{Authority, Vault};

use crate::cli::{DataDir, SecretSetArgs};
use crate::config::{ModelConfig, ModelProvider};

/// Largest secret value `secret set` accepts.
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Opens (or creates) the data directory's vault.
pub(crate) fn open_vault(dir: &DataDir) -> anyhow::Result<Vault> {
    let (path, key) = dir.vault_paths();
    Vault::open(&path, &key).with_context(|| format!("opening the vault {}", path.display()))
}

/// `secret set NAME`: the value from stdin.
pub(crate) fn set(args: &SecretSetArgs) -> anyhow::Result<ExitCode> {
    if args.name.is_empty()
        || args
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "a secret's name is one word without spaces: {:?}",
            args.name
        );
    }
    let mut value = Vec::new();
    std::io::stdin()
        .take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut value)
        .context("reading the secret from stdin")?;
    if value.len() > MAX_SECRET_BYTES {
        bail!("the secret is larger than {MAX_SECRET_BYTES} bytes");
    }
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("the secret is empty (write its value to stdin)");
    }
    let vault = open_vault(&args.dir)?;
    vault
        .put(&args.name, &value)
        .context("storing the secret")?;
    value.fill(0);
    eprintln!("stored secret {:?}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// `secret list`: names only.
pub(crate) fn list(dir: &DataDir) -> anyhow::Result<ExitCode> {
    let vault = open_vault(dir)?;
    let mut names = vault.names();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The node's models, as the config names them; API keys are read from the vault.
///
/// # Errors
/// A model whose key secret is missing from the vault, or whose settings are unusable.
pub(crate) fn model_host(
    dir: &DataDir,
    models: &std::collections::BTreeMap<String, ModelConfig>,
    authority: Authority,
    journal: Arc<dyn Journal>,
) -> anyhow::Result<ModelHost> {
    let mut host = ModelHost::builder(authority, journal);
    let needs_vault = models.values().any(|m| m.api_key_secret.is_some());
    let vault = if needs_vault {
        Some(open_vault(dir)?)
    } else {
        None
    };
    for (name, config) in models {
        let timeouts = ModelTimeouts {
            request: Duration::from_secs(config.timeout_secs.unwrap_or(120).max(1)),
            ..ModelTimeouts::default()
        };
        let retry = RetryPolicy {
            max_retries: config.max_retries.unwrap_or(3),
            ..RetryPolicy::default()
        };
        let key: Option<Secret> = match (&config.api_key_secret, &vault) {
            (Some(secret), Some(vault)) => Some(vault.get(secret).with_context(|| {
                format!(
                    "model {name}: its API key secret {secret:?} is not in the vault \
                     (store it with `toka-node secret set {secret}`)"
                )
            })?),
            _ => None,
        };
        host = match config.provider {
            ModelProvider::Openai => {
                let mut client = OpenAiClient::builder(&config.base_url, &config.model)
                    .timeouts(timeouts)
                    .retry(retry);
                if let Some(key) = key {
                    client = client.api_key(key);
                }
                let client = client.build().with_context(|| format!("model {name}"))?;
                host.model(name.clone(), client)
            }
            ModelProvider::Anthropic => {
                let mut client = AnthropicClient::builder(&config.base_url, &config.model)
                    .timeouts(timeouts)
                    .retry(retry);
                if let Some(key) = key {
                    client = client.api_key(key);
                }
                let client = client.build().with_context(|| format!("model {name}"))?;
                host.model(name.clone(), client)
            }
        };
    }
    Ok(host.build())
}
