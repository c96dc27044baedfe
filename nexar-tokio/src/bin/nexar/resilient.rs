//! `nexar worker ... resilient`: allreduce in a loop straight through failures, for the
//! automatic recovery policy. One JSON line per iteration on stdout:
//! `{"iter":I,"epoch":E,"rank":R,"world":W,"check":"ok"}`, or `"check":"error: ..."` for an
//! iteration a failure cut short (the loop then waits for the new epoch and goes on).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use nexar_tokio::{Client, Event, MembershipEvents, NexarError, ReduceOp};

/// Options of the resilient loop.
#[derive(Debug, Clone, Args)]
pub struct ResilientArgs {
    /// Iterations.
    #[arg(long, default_value_t = 100)]
    pub iters: u32,
    /// f32 elements per allreduce.
    #[arg(long, default_value_t = 1 << 16)]
    pub count: usize,
    /// Pause between iterations, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub pause_ms: u64,
}

/// Run the loop; `Ok(false)` if any completed allreduce gave a wrong result.
///
/// After a failure the survivors may disagree on what completed (a rank may have got its
/// result just before the failure reached it), so on every new epoch they first agree on
/// the next iteration (an allreduce of it, max) before any data moves. The driver's epoch
/// fence guarantees that nothing built for the old world runs on the new one.
pub async fn run(client: &Client, args: &ResilientArgs) -> Result<bool, super::Error> {
    let mut events = client
        .membership_events()
        .ok_or("membership events already taken")?;
    let mut all_ok = true;
    let mut iter: u64 = 0;
    let mut seen_epoch = client.epoch();
    while iter < u64::from(args.iters) {
        if client.epoch() != seen_epoch {
            let mut next = [iter];
            match client.all_reduce(&mut next, ReduceOp::Max).await {
                Ok(()) => {
                    iter = next[0];
                    seen_epoch = client.epoch();
                    continue;
                }
                Err(e) => {
                    wait_for_new_epoch(client, &mut events, client.epoch(), &e).await?;
                    continue;
                }
            }
        }
        let epoch = seen_epoch;
        let (rank, world) = (client.rank(), client.world_size());
        let mut data = vec![(rank + 1) as f32; args.count];
        let check = match client.all_reduce(&mut data, ReduceOp::Sum).await {
            Ok(()) => {
                let want = (world * (world + 1) / 2) as f32;
                if data.iter().all(|v| *v == want) {
                    "ok".to_string()
                } else {
                    all_ok = false;
                    format!("wrong: {} want {want}", data[0])
                }
            }
            Err(e) => {
                wait_for_new_epoch(client, &mut events, epoch, &e).await?;
                format!("error: {e}").replace('"', "'")
            }
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{{\"iter\":{iter},\"epoch\":{epoch},\"rank\":{rank},\"world\":{world},\"check\":\"{check}\"}}"
            )?;
            out.flush()?;
        }
        iter += 1;
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok(all_ok)
}

/// Wait until the node is past `epoch` (the survivors' agreed world), or fail if this
/// node is out of the cluster.
async fn wait_for_new_epoch(
    client: &Client,
    events: &mut MembershipEvents,
    epoch: u64,
    cause: &NexarError,
) -> Result<(), super::Error> {
    while client.epoch() == epoch {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(Event::Evicted { .. } | Event::RecoveryFailed { .. })) | Ok(None) => {
                return Err(format!("no longer a member after: {cause}").into());
            }
            Ok(Some(_)) => {}
            Err(_) => return Err(format!("no new epoch after: {cause}").into()),
        }
    }
    Ok(())
}
