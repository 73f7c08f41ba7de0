//! `counter`: the smallest durable agent. Args `{}`; messages `{"add": N}`; query `"get"`
//! → `{"value": N}` (`POST /agents/{id}/query`: nothing journaled). `"get"` is also a
//! message, so an ask still answers it, journaled like any message; every message replies
//! with the value after it.

use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, Context, Queries};

/// The `counter` kind.
pub(crate) struct Counter;

/// Arguments of a counter: none (`{}`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CounterArgs {}

/// A counter's messages: `{"add": N}` or `"get"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CounterMsg {
    /// Adds `N` (negative subtracts); saturates instead of overflowing.
    Add(i64),
    /// Reads the value.
    Get,
}

/// A counter's query: `"get"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CounterQuery {
    /// Reads the value.
    Get,
}

/// A counter's reply: `{"value": N}`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CounterValue {
    /// The value after the message.
    pub(crate) value: i64,
}

impl Agent for Counter {
    const KIND: &'static str = "counter";
    type Args = CounterArgs;
    type Msg = CounterMsg;
    type Reply = CounterValue;
    type State = i64;

    fn init(&self, _: &CounterArgs) -> Result<i64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _cx: &mut Context<'_, Self>,
        value: &mut i64,
        msg: CounterMsg,
    ) -> Result<CounterValue, AgentError> {
        if let CounterMsg::Add(n) = msg {
            *value = value.saturating_add(n);
        }
        Ok(CounterValue { value: *value })
    }

    fn snapshot(&self, value: &i64) -> Option<Vec<u8>> {
        Some(value.to_le_bytes().to_vec())
    }

    fn restore(&self, _: &CounterArgs, snapshot: &[u8]) -> Result<i64, AgentError> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| AgentError::msg("a counter snapshot is 8 bytes"))?;
        Ok(i64::from_le_bytes(bytes))
    }
}

impl Queries for Counter {
    type Query = CounterQuery;
    type Answer = CounterValue;

    fn query(
        &self,
        value: &i64,
        CounterQuery::Get: CounterQuery,
    ) -> Result<CounterValue, AgentError> {
        Ok(CounterValue { value: *value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_replies_have_the_documented_json_shape() {
        let add: CounterMsg = serde_json::from_str(r#"{"add": 5}"#).unwrap();
        assert!(matches!(add, CounterMsg::Add(5)));
        let get: CounterMsg = serde_json::from_str(r#""get""#).unwrap();
        assert!(matches!(get, CounterMsg::Get));
        assert!(serde_json::from_str::<CounterMsg>(r#"{"mul": 2}"#).is_err());
        let args: CounterArgs = serde_json::from_str("{}").unwrap();
        let _ = args;
        assert_eq!(
            serde_json::to_string(&CounterValue { value: 7 }).unwrap(),
            r#"{"value":7}"#
        );
    }
}
