//! The collective vocabulary shared by the codec, the planner and the user API.
//!
//! Each enum is one byte on the wire. They are `#[non_exhaustive]` because new
//! collectives, types and algorithms are expected; a peer that sends a code this build
//! does not know gets a typed `BadField` error rather than a silent misreading.

code_enum! {
    /// Which collective operation a chunk belongs to.
    #[non_exhaustive]
    pub enum CollectiveKind {
        /// Every rank ends with the reduction of all inputs.
        AllReduce = 0,
        /// The root's buffer is copied to every rank.
        Broadcast = 1,
        /// The root ends with the reduction of all inputs.
        Reduce = 2,
        /// Every rank ends with the concatenation of all inputs.
        AllGather = 3,
        /// Each rank ends with its slice of the reduction.
        ReduceScatter = 4,
        /// The root ends with the concatenation of all inputs.
        Gather = 5,
        /// The root's buffer is split, one slice per rank.
        Scatter = 6,
        /// Every rank sends a distinct slice to every rank.
        AllToAll = 7,
        /// Inclusive prefix reduction in rank order.
        Scan = 8,
        /// Exclusive prefix reduction in rank order.
        ExclusiveScan = 9,
        /// Synchronisation only, no data.
        Barrier = 10,
    }
}

code_enum! {
    /// Element type of a collective buffer.
    #[non_exhaustive]
    pub enum DType {
        /// IEEE 754 binary32.
        F32 = 0,
        /// IEEE 754 binary64.
        F64 = 1,
        /// IEEE 754 binary16.
        F16 = 2,
        /// bfloat16.
        BF16 = 3,
        /// Signed 8-bit integer.
        I8 = 4,
        /// Unsigned 8-bit integer.
        U8 = 5,
        /// Signed 32-bit integer.
        I32 = 6,
        /// Unsigned 32-bit integer.
        U32 = 7,
        /// Signed 64-bit integer.
        I64 = 8,
        /// Unsigned 64-bit integer.
        U64 = 9,
    }
}

impl DType {
    /// Size of one element in bytes; chunk lengths are checked as multiples of it.
    pub const fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }
}

code_enum! {
    /// How a reducing collective combines elements.
    #[non_exhaustive]
    pub enum ReduceOp {
        /// Sum.
        Sum = 0,
        /// Product.
        Prod = 1,
        /// Minimum.
        Min = 2,
        /// Maximum.
        Max = 3,
        /// Arithmetic mean (sum, then divide by the world size).
        Avg = 4,
        /// The collective does not reduce (broadcast, gather, barrier ...); carried so
        /// that the fingerprint has the same shape for every collective.
        None = 5,
    }
}

code_enum! {
    /// Which plan produced a chunk; part of the chunk identity so that two ranks that
    /// picked different algorithms fail with a mismatch instead of mixing data.
    #[non_exhaustive]
    pub enum Algorithm {
        /// Ring (reduce-scatter then all-gather for allreduce).
        Ring = 0,
        /// Recursive doubling.
        RecursiveDoubling = 1,
        /// Recursive halving then doubling.
        HalvingDoubling = 2,
        /// Binomial tree.
        BinomialTree = 3,
        /// Pipelined chain.
        Pipelined = 4,
        /// Scatter then all-gather (large broadcasts).
        ScatterAllGather = 5,
        /// Reduce-scatter then gather (large reduces).
        ReduceScatterGather = 6,
        /// Pairwise exchange (all-to-all).
        Pairwise = 7,
        /// Root talks to every rank directly.
        Linear = 8,
        /// Dissemination (barrier).
        Dissemination = 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::UnknownCode;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_errors() {
        fn check<T>(all: &[T], what: &'static str)
        where
            T: Copy + PartialEq + std::fmt::Debug + Into<u8> + TryFrom<u8, Error = UnknownCode>,
        {
            for (i, &v) in all.iter().enumerate() {
                let code: u8 = v.into();
                assert_eq!(usize::from(code), i, "codes are dense and ordered");
                assert_eq!(T::try_from(code), Ok(v));
            }
            let first_unknown = all.len() as u8;
            for code in first_unknown..=u8::MAX {
                assert_eq!(T::try_from(code), Err(UnknownCode { what, code }));
            }
        }
        check(CollectiveKind::ALL, "CollectiveKind");
        check(DType::ALL, "DType");
        check(ReduceOp::ALL, "ReduceOp");
        check(Algorithm::ALL, "Algorithm");
    }

    #[test]
    fn dtype_sizes() {
        let sizes: Vec<usize> = DType::ALL.iter().map(|d| d.size()).collect();
        assert_eq!(sizes, [4, 8, 2, 2, 1, 1, 4, 4, 8, 8]);
    }
}
