//! `agents tree`: the supervision tree as the journal records it, or, through the running
//! node, as the node holds it (`GET /agents`, with each agent's status).
//!
//! Replays the [`TREE_STREAM`] records in order, as the runtime does on recovery: a spawn
//! adds an agent (under its parent, or at the top level when the parent is unknown; a
//! second spawn of a live id is ignored), a stop removes the agents it names.

use std::collections::HashMap;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use toka_actors::record::{TREE_STREAM, TreeRecord};
use toka_store::Journal;

use crate::cli::{TreeArgs, block_on};
use crate::progress::Progress;
use crate::remote::{Access, access};

/// One live agent.
#[derive(Debug)]
struct Node {
    kind: String,
    parent: Option<String>,
    /// `running`, `down` or `halted` (known only through the node).
    status: Option<String>,
    /// In spawn order.
    children: Vec<String>,
}

/// The live agents, and the top-level ones in spawn order.
#[derive(Debug, Default)]
struct Tree {
    nodes: HashMap<String, Node>,
    top: Vec<String>,
}

impl Tree {
    fn apply(&mut self, record: TreeRecord) {
        // A remote child is listed under its parent; an agent adopted for a supervisor in
        // another shard at the top level.
        let record = match record {
            TreeRecord::SpawnedElsewhere {
                parent,
                kind,
                args,
                spec,
            } => TreeRecord::Spawned {
                parent: Some(parent),
                kind,
                args,
                spec,
                base: 0,
            },
            TreeRecord::Adopted {
                kind,
                args,
                spec,
                base,
                ..
            } => TreeRecord::Spawned {
                parent: None,
                kind,
                args,
                spec,
                base,
            },
            other => other,
        };
        match record {
            TreeRecord::Spawned {
                parent, kind, spec, ..
            } => {
                let id = spec.id.to_string();
                if self.nodes.contains_key(&id) {
                    return;
                }
                let parent = parent
                    .map(|p| p.to_string())
                    .filter(|p| self.nodes.contains_key(p));
                match parent.as_ref().and_then(|p| self.nodes.get_mut(p)) {
                    Some(node) => node.children.push(id.clone()),
                    None => self.top.push(id.clone()),
                }
                self.nodes.insert(
                    id,
                    Node {
                        kind,
                        parent,
                        status: None,
                        children: Vec::new(),
                    },
                );
            }
            TreeRecord::Stopped { ids } => {
                for id in ids {
                    let id = id.to_string();
                    let Some(node) = self.nodes.remove(&id) else {
                        continue;
                    };
                    match node.parent.as_ref().and_then(|p| self.nodes.get_mut(p)) {
                        Some(parent) => parent.children.retain(|c| *c != id),
                        None => self.top.retain(|c| *c != id),
                    }
                }
            }
            // Converted above; later kinds of change are not shown.
            _ => {}
        }
    }

    /// Every agent with its depth, parents before children, in spawn order.
    fn walk(&self) -> Vec<(usize, &str, &Node)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, &str)> =
            self.top.iter().rev().map(|id| (0, id.as_str())).collect();
        while let Some((depth, id)) = stack.pop() {
            if let Some(node) = self.nodes.get(id) {
                stack.extend(node.children.iter().rev().map(|c| (depth + 1, c.as_str())));
                out.push((depth, id, node));
            }
        }
        out
    }

    /// The tree of `GET /agents`: `[{"id", "kind", "parent", "status"}]`.
    fn from_api(agents: &[serde_json::Value]) -> Tree {
        let mut tree = Tree::default();
        for agent in agents {
            let Some(id) = agent["id"].as_str() else {
                continue;
            };
            tree.nodes.insert(
                id.to_owned(),
                Node {
                    kind: agent["kind"].as_str().unwrap_or_default().to_owned(),
                    parent: agent["parent"].as_str().map(str::to_owned),
                    status: agent["status"].as_str().map(str::to_owned),
                    children: Vec::new(),
                },
            );
        }
        for agent in agents {
            let Some(id) = agent["id"].as_str() else {
                continue;
            };
            let parent = agent["parent"]
                .as_str()
                .filter(|p| tree.nodes.contains_key(*p));
            match parent.and_then(|p| tree.nodes.get_mut(p)) {
                Some(node) => node.children.push(id.to_owned()),
                None => tree.top.push(id.to_owned()),
            }
        }
        tree
    }
}

/// The tree as the journal records it.
fn replay(journal: &impl Journal) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    let mut progress = Progress::new(
        journal.stream_version(TREE_STREAM)?,
        "replaying the agent tree",
        true,
    );
    for event in journal.iter_stream(TREE_STREAM, 1)? {
        let event = event.context("reading the journal")?;
        progress.inc();
        let record = toka_actors::record::decode_tree(&event.kind, event.seq, &event.payload)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{TREE_STREAM} record {} (position {}) does not decode: {e}",
                    event.seq,
                    event.position
                )
            })?;
        tree.apply(record);
    }
    progress.finish();
    Ok(tree)
}

/// The number of agents the journal records (for `status` offline).
pub(crate) fn count(journal: &impl Journal) -> anyhow::Result<usize> {
    Ok(replay(journal)?.nodes.len())
}

pub(crate) fn tree(args: &TreeArgs) -> anyhow::Result<ExitCode> {
    let tree = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => replay(&journal)?,
        Access::Online(client) => {
            let agents = block_on(client.get("/agents"))??;
            Tree::from_api(agents.as_array().map(Vec::as_slice).unwrap_or_default())
        }
    };
    let walked = tree.walk();
    let mut out = io::stdout().lock();
    let written = if args.json {
        let agents: Vec<_> = walked
            .iter()
            .map(|(_, id, node)| json!({ "id": id, "kind": node.kind, "parent": node.parent }))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(agents))
    } else if walked.is_empty() {
        writeln!(out, "no agents")
    } else {
        walked.iter().try_for_each(|(depth, id, node)| {
            let status = match node.status.as_deref() {
                Some(status) if status != "running" => format!(" [{status}]"),
                _ => String::new(),
            };
            writeln!(
                out,
                "{:indent$}{id} ({}){status}",
                "",
                node.kind,
                indent = depth * 2
            )
        })
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toka_actors::SpawnSpec;

    fn spawn(tree: &mut Tree, parent: Option<&str>, id: &str) {
        tree.apply(TreeRecord::Spawned {
            parent: parent.map(|p| toka_actors::AgentId::new(p).unwrap()),
            kind: format!("k-{id}"),
            args: Vec::new(),
            spec: (&SpawnSpec::new(id).unwrap()).into(),
            base: 0,
        });
    }

    #[test]
    fn replay_keeps_spawn_order_and_drops_stopped_subtrees() {
        let mut tree = Tree::default();
        spawn(&mut tree, None, "r");
        spawn(&mut tree, Some("r"), "a");
        spawn(&mut tree, Some("a"), "a1");
        spawn(&mut tree, Some("r"), "b");
        spawn(&mut tree, Some("gone"), "orphan");
        spawn(&mut tree, None, "r");
        let ids = |tree: &Tree| {
            tree.walk()
                .into_iter()
                .map(|(depth, id, _)| format!("{depth}{id}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&tree), ["0r", "1a", "2a1", "1b", "0orphan"]);
        tree.apply(TreeRecord::Stopped {
            ids: ["a1", "a"]
                .map(|id| toka_actors::AgentId::new(id).unwrap())
                .to_vec(),
        });
        assert_eq!(ids(&tree), ["0r", "1b", "0orphan"]);
        assert_eq!(tree.nodes["b"].parent.as_deref(), Some("r"));
        assert_eq!(tree.nodes["b"].kind, "k-b");
    }
}
