//! The public handles can cross threads and tasks.

use toka_actors::{AgentError, AgentId, AgentRef, Error, Runtime, SpawnSpec, Topic};

fn send_sync<T: Send + Sync>() {}

struct Nothing;
impl toka_actors::Agent for Nothing {
    const KIND: &'static str = "nothing";
    type Args = ();
    type Msg = ();
    type Reply = ();
    type State = ();
    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }
    async fn handle(
        &self,
        _: &mut toka_actors::Context<'_, Self>,
        _: &mut (),
        _: (),
    ) -> Result<(), AgentError> {
        Ok(())
    }
}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<Runtime>();
    send_sync::<AgentRef<Nothing>>();
    send_sync::<AgentId>();
    send_sync::<SpawnSpec>();
    send_sync::<Topic<u64>>();
    send_sync::<Error>();
    fn send<T: Send>(_: T) {}
    // The futures of the public async API are Send (usable with tokio::spawn).
    let _ = |rt: Runtime, r: AgentRef<Nothing>| {
        send(async move {
            let _ = r.send(()).await;
            let _ = r.ask((), std::time::Duration::from_secs(1)).await;
            let _ = rt.spawn::<Nothing>(SpawnSpec::new("x").unwrap(), ()).await;
            let _ = rt.shutdown().await;
        });
    };
}
