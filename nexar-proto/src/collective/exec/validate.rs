//! What no plan can run, refused when the operation starts, before anything is sent.

use super::super::spec::CollectiveSpec;
use crate::codec::{CollectiveKind, DType, ReduceOp};
use crate::error::CommandError;

/// Refuse what no plan can run, before anything is sent.
pub(super) fn validate(spec: &CollectiveSpec, size: u32) -> Result<(), CommandError> {
    let rooted = matches!(
        spec.kind,
        CollectiveKind::Broadcast
            | CollectiveKind::Reduce
            | CollectiveKind::Gather
            | CollectiveKind::Scatter
    );
    if rooted && spec.root >= size {
        return Err(CommandError::UnknownRank {
            rank: spec.root,
            world_size: size,
        });
    }
    let reducing = matches!(
        spec.kind,
        CollectiveKind::AllReduce
            | CollectiveKind::Reduce
            | CollectiveKind::ReduceScatter
            | CollectiveKind::Scan
            | CollectiveKind::ExclusiveScan
    );
    let float = matches!(
        spec.dtype,
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    );
    let bad_op = match spec.op {
        ReduceOp::None => reducing,
        ReduceOp::Avg => {
            !reducing
                || !float
                || matches!(
                    spec.kind,
                    CollectiveKind::Scan | CollectiveKind::ExclusiveScan
                )
        }
        _ => !reducing,
    };
    if bad_op {
        return Err(CommandError::InvalidCollective {
            detail: format!(
                "op {:?} does not apply to {:?} on {:?}",
                spec.op, spec.kind, spec.dtype
            ),
        });
    }
    Ok(())
}
