//! The supervision tree as the journal records it: the model recovery rebuilds from.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{IdMap, IdSet};
use crate::record::TreeRecord;
use crate::{AgentId, Restart, SpawnSpec, SupervisorSpec};

/// One agent in the tree.
///
/// Kept for every agent, running or not, for the runtime's life: compact (104 bytes).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) parent: Option<AgentId>,
    /// Its kind's name, shared by every node of the kind (see [`Tree::insert`]).
    pub(crate) kind: Arc<str>,
    pub(crate) args: Box<[u8]>,
    /// Its [`SpawnSpec`] less the id (the node's key).
    spec: NodeSpec,
    /// Where this incarnation begins in the agent's stream (see [`crate::record`]): it
    /// ignores the records at or below this sequence number. 0: the id's first.
    pub(crate) base: u64,
    /// In start order.
    pub(crate) children: Vec<AgentId>,
}

/// A [`SpawnSpec`] without its id, the settings most agents leave at their defaults
/// boxed.
#[derive(Clone, Debug)]
struct NodeSpec {
    restart: Restart,
    durable: bool,
    /// `None`: default supervision, the runtime's snapshot interval and attempts.
    rest: Option<Box<SpecRest>>,
}

/// The rarely set part of a [`NodeSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpecRest {
    supervision: SupervisorSpec,
    snapshot_every: Option<u64>,
    max_attempts: Option<u32>,
}

impl NodeSpec {
    fn new(spec: SpawnSpec) -> Self {
        // Destructured: a field added to `SpawnSpec` must be added here too.
        let SpawnSpec {
            id: _,
            restart,
            durable,
            supervision,
            snapshot_every,
            max_attempts,
            // Where a child runs is the tree's `elsewhere` set, not part of its node.
            placement: _,
        } = spec;
        let rest = SpecRest {
            supervision,
            snapshot_every,
            max_attempts,
        };
        let default = SpecRest {
            supervision: SupervisorSpec::default(),
            snapshot_every: None,
            max_attempts: None,
        };
        NodeSpec {
            restart,
            durable,
            rest: (rest != default).then(|| Box::new(rest)),
        }
    }
}

impl Node {
    /// Whether the agent is journaled.
    pub(crate) fn durable(&self) -> bool {
        self.spec.durable
    }

    /// When its supervisor restarts it.
    pub(crate) fn restart(&self) -> Restart {
        self.spec.restart
    }

    /// Its spawn spec, given its id.
    pub(crate) fn spawn_spec(&self, id: AgentId) -> SpawnSpec {
        let mut spec = SpawnSpec::with_id(id).restart(self.spec.restart);
        spec.durable = self.spec.durable;
        if let Some(rest) = &self.spec.rest {
            spec.supervision = rest.supervision;
            spec.snapshot_every = rest.snapshot_every;
            spec.max_attempts = rest.max_attempts;
        }
        spec
    }
}

/// Where an agent sits in the tree; what [`Runtime::tree`](crate::Runtime::tree) lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its id.
    pub id: AgentId,
    /// Its kind.
    pub kind: String,
    /// Its parent (`None`: top level).
    pub parent: Option<AgentId>,
    /// Whether it is journaled.
    pub durable: bool,
    /// Whether an actor is running for it now.
    pub running: bool,
    /// Which incarnation of the id this is, as the sequence number in the agent's stream
    /// where it begins: 0 for the id's first incarnation; for an id spawned again after a
    /// stop, the sequence number of the `toka.incarnation` marker written then. Records of
    /// the stream at or below it belong to earlier incarnations (see
    /// [`record`](crate::record)).
    #[serde(default)]
    pub incarnation: u64,
    /// Why it is halted, if it is: a replay of its journal did not match its handler
    /// ([`Error::NonDeterministic`](crate::Error::NonDeterministic)); its supervisor does not
    /// restart it until a runtime whose handler matches starts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// How often its supervisor restarted it since this runtime started (not journaled:
    /// a restart of the node starts counting again; a stop forgets it). A one-for-all or
    /// rest-for-one restart counts for every agent it restarts.
    #[serde(default)]
    pub restarts: u64,
    /// A remote child: it runs in another runtime, and is listed here for its parent,
    /// which supervises it (see [`remote`](crate::remote)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elsewhere: bool,
    /// The supervisor in another runtime this top-level agent runs for, if any (see
    /// [`remote`](crate::remote)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<AgentId>,
}

/// The tree: nodes by id, plus the top-level agents in start order.
///
/// Nodes are boxed: the table keeps spare buckets (up to half of them after it grows), and
/// a spare bucket of boxes costs a pointer, not a whole node.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    nodes: IdMap<AgentId, Box<Node>>,
    top: Vec<AgentId>,
    /// The kind names of the nodes, each stored once (registered names only: a spawn of
    /// an unknown kind is refused before it gets here, so a fast hash is safe).
    kinds: rustc_hash::FxHashSet<Arc<str>>,
    /// Children of this runtime's agents that run in another runtime (remote children,
    /// see [`remote`](crate::remote)): in the tree for their supervisor, never started
    /// here.
    elsewhere: IdSet<AgentId>,
    /// Top-level agents run here for a supervisor in another runtime: agent → supervisor.
    adopted: IdMap<AgentId, AgentId>,
    /// Remote children being stopped for good: not started again meanwhile.
    leaving: IdSet<AgentId>,
}

impl Tree {
    /// Applies a journaled change. Unknown parents make a node top-level (its parent was
    /// stopped while the spawn was in flight), so a replay never fails on ordering.
    pub(crate) fn apply(&mut self, record: TreeRecord) {
        match record {
            TreeRecord::Spawned {
                parent,
                kind,
                args,
                spec,
                base,
            } => {
                self.insert(parent, &kind, args, spec.into(), base);
            }
            TreeRecord::Stopped { ids } => {
                for id in ids {
                    self.remove(&id);
                }
            }
            TreeRecord::SpawnedElsewhere {
                parent,
                kind,
                args,
                spec,
            } => {
                let spec: SpawnSpec = spec.into();
                let id = spec.id.clone();
                if self.insert(Some(parent), &kind, args, spec, 0) {
                    self.elsewhere.insert(id);
                }
            }
            TreeRecord::Adopted {
                supervisor,
                kind,
                args,
                spec,
                base,
            } => {
                let spec: SpawnSpec = spec.into();
                let id = spec.id.clone();
                if self.insert(None, &kind, args, spec, base) {
                    self.adopted.insert(id, supervisor);
                }
            }
        }
    }

    /// Marks `id` as a child that runs in another runtime.
    pub(crate) fn mark_elsewhere(&mut self, id: &AgentId) {
        if self.nodes.contains_key(id) {
            self.elsewhere.insert(id.clone());
        }
    }

    /// Whether `id` is a child of this runtime's agent that runs in another runtime.
    pub(crate) fn is_elsewhere(&self, id: &AgentId) -> bool {
        !self.elsewhere.is_empty() && self.elsewhere.contains(id)
    }

    /// Marks remote child `id` as being stopped for good (`false`: no longer).
    pub(crate) fn set_leaving(&mut self, id: &AgentId, leaving: bool) {
        if leaving {
            self.leaving.insert(id.clone());
        } else {
            self.leaving.remove(id);
        }
    }

    /// Whether `id` is a remote child that must not start: being stopped for good, or
    /// gone.
    pub(crate) fn must_not_start(&self, id: &AgentId) -> bool {
        !self.nodes.contains_key(id) || self.leaving.contains(id)
    }

    /// Marks top-level `id` as run here for `supervisor` in another runtime.
    pub(crate) fn mark_adopted(&mut self, id: &AgentId, supervisor: AgentId) {
        if self.nodes.contains_key(id) {
            self.adopted.insert(id.clone(), supervisor);
        }
    }

    /// The supervisor in another runtime that `id` runs here for, if any.
    pub(crate) fn adopted_by(&self, id: &AgentId) -> Option<&AgentId> {
        if self.adopted.is_empty() {
            return None;
        }
        self.adopted.get(id)
    }

    /// Adds a node; `false` if the id is taken.
    pub(crate) fn insert(
        &mut self,
        parent: Option<AgentId>,
        kind: &str,
        args: Vec<u8>,
        spec: SpawnSpec,
        base: u64,
    ) -> bool {
        let id = spec.id.clone();
        if self.nodes.contains_key(&id) {
            return false;
        }
        // Kept for the agent's life: no spare capacity (an encoder's buffer has some).
        let args = args.into_boxed_slice();
        let kind = match self.kinds.get(kind) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = kind.into();
                self.kinds.insert(Arc::clone(&shared));
                shared
            }
        };
        let parent = parent.filter(|p| self.nodes.contains_key(p));
        match &parent {
            Some(p) => {
                if let Some(node) = self.nodes.get_mut(p) {
                    node.children.push(id.clone());
                }
            }
            None => self.top.push(id.clone()),
        }
        self.nodes.insert(
            id,
            Box::new(Node {
                parent,
                kind,
                args,
                spec: NodeSpec::new(spec),
                base,
                children: Vec::new(),
            }),
        );
        true
    }

    /// Sets where `id`'s incarnation begins in its stream.
    pub(crate) fn set_base(&mut self, id: &AgentId, base: u64) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.base = base;
        }
    }

    /// Removes one node (its children must be removed separately, first).
    pub(crate) fn remove(&mut self, id: &AgentId) -> Option<Node> {
        let node = *self.nodes.remove(id)?;
        self.elsewhere.remove(id);
        self.adopted.remove(id);
        self.leaving.remove(id);
        match &node.parent {
            Some(p) => {
                if let Some(parent) = self.nodes.get_mut(p) {
                    parent.children.retain(|c| c != id);
                }
            }
            None => self.top.retain(|c| c != id),
        }
        Some(node)
    }

    /// `id` and its descendants, children before parents.
    pub(crate) fn subtree_bottom_up(&self, id: &AgentId) -> Vec<AgentId> {
        let mut out = Vec::new();
        let mut stack = vec![(id.clone(), false)];
        while let Some((next, expanded)) = stack.pop() {
            if expanded {
                out.push(next);
                continue;
            }
            let Some(node) = self.nodes.get(&next) else {
                continue;
            };
            stack.push((next, true));
            for child in node.children.iter().rev() {
                stack.push((child.clone(), false));
            }
        }
        out
    }

    pub(crate) fn get(&self, id: &AgentId) -> Option<&Node> {
        self.nodes.get(id).map(|node| &**node)
    }

    /// The children of `parent` (`None`: the top level), in start order.
    pub(crate) fn children_of(&self, parent: Option<&AgentId>) -> Vec<AgentId> {
        match parent {
            None => self.top.clone(),
            Some(p) => self
                .nodes
                .get(p)
                .map(|n| n.children.clone())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, parents before children.
    pub(crate) fn walk(&self) -> Vec<(AgentId, &Node)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<AgentId> = self.top.iter().rev().cloned().collect();
        while let Some(id) = stack.pop() {
            if let Some(node) = self.nodes.get(&id) {
                stack.extend(node.children.iter().rev().cloned());
                out.push((id, &**node));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(tree: &mut Tree, parent: Option<&str>, id: &str) {
        let spec = SpawnSpec::new(id).unwrap();
        let parent = parent.map(|p| AgentId::new(p).unwrap());
        tree.apply(TreeRecord::Spawned {
            parent,
            kind: "k".into(),
            args: vec![],
            spec: (&spec).into(),
            base: 0,
        });
    }

    #[test]
    fn nodes_give_back_the_spawn_spec() {
        use crate::{Backoff, Intensity, Strategy};
        use std::time::Duration;
        let plain = SpawnSpec::new("plain").unwrap();
        let custom = SpawnSpec::new("custom")
            .unwrap()
            .transient()
            .restart(Restart::Temporary)
            .supervise(
                SupervisorSpec::new(Strategy::RestForOne)
                    .intensity(Intensity {
                        max_restarts: 7,
                        within: Duration::from_secs(9),
                    })
                    .backoff(Backoff {
                        initial: Duration::from_millis(5),
                        max: Duration::from_secs(1),
                    }),
            )
            .snapshot_every(17)
            .max_attempts(2);
        let mut tree = Tree::default();
        for spec in [&plain, &custom] {
            assert!(tree.insert(None, "k", vec![1, 2], spec.clone(), 0));
            let node = tree.get(&spec.id).unwrap();
            assert_eq!(node.spawn_spec(spec.id.clone()), *spec);
            assert_eq!(node.durable(), spec.durable);
            assert_eq!(node.restart(), spec.restart);
            assert_eq!(&*node.args, &[1, 2]);
        }
        assert!(tree.get(&plain.id).unwrap().spec.rest.is_none());
        assert_eq!(
            std::mem::size_of::<Node>(),
            104,
            "a node's size changed: update its doc"
        );
    }

    #[test]
    fn subtrees_and_walks_keep_order() {
        let mut tree = Tree::default();
        spawn(&mut tree, None, "r");
        spawn(&mut tree, Some("r"), "a");
        spawn(&mut tree, Some("a"), "a1");
        spawn(&mut tree, Some("r"), "b");
        let names = |v: Vec<AgentId>| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        let root = AgentId::new("r").unwrap();
        assert_eq!(names(tree.subtree_bottom_up(&root)), ["a1", "a", "b", "r"]);
        let walked: Vec<_> = tree.walk().into_iter().map(|(i, _)| i).collect();
        assert_eq!(names(walked), ["r", "a", "a1", "b"]);
        tree.apply(TreeRecord::Stopped {
            ids: tree.subtree_bottom_up(&AgentId::new("a").unwrap()),
        });
        assert_eq!(tree.len(), 2);
        assert_eq!(names(tree.children_of(Some(&root))), ["b"]);
    }
}
