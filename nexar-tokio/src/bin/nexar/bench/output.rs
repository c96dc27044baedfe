//! What rank 0 prints: the table's header and rows, or one JSON object per row with
//! `--json`; kept apart from the sweep so the output format reads in one place.

use super::{BenchArgs, Dtype, Op, Row};

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        Dtype::I8 => "i8",
        Dtype::U8 => "u8",
        Dtype::I32 => "i32",
        Dtype::U32 => "u32",
        Dtype::I64 => "i64",
        Dtype::U64 => "u64",
    }
}

fn op_name(op: Op) -> String {
    format!("{op:?}").to_ascii_lowercase()
}

fn reduces(op: Op) -> bool {
    matches!(
        op,
        Op::Allreduce | Op::Reduce | Op::Reducescatter | Op::Scan
    )
}

fn rooted(op: Op) -> bool {
    matches!(op, Op::Broadcast | Op::Reduce | Op::Gather | Op::Scatter)
}

pub(super) fn header(a: &BenchArgs, n: usize, driver: &str) {
    println!(
        "# nexar bench: {}, {n} ranks in {driver}, dtype {}, up to {} timed runs ({} warmup, {} before the first size) per size, budget {} B per size",
        op_name(a.op),
        dtype_name(a.dtype),
        a.iters(),
        a.warmup(1),
        a.warmup(0),
        a.budget_bytes
    );
    println!("# time: median over runs of the max over ranks (barrier before each run); busbw = algbw x {}", match a.op {
        Op::Allreduce => "2(n-1)/n",
        Op::Reducescatter | Op::Allgather | Op::Alltoall | Op::Gather | Op::Scatter => "(n-1)/n",
        Op::Barrier => "0",
        _ => "1",
    });
    println!("#");
    println!(
        "# {:>10} {:>12} {:>6} {:>6} {:>5} {:>11} {:>8} {:>8}  check",
        "size", "count", "type", "redop", "root", "time", "algbw", "busbw"
    );
    println!(
        "# {:>10} {:>12} {:>6} {:>6} {:>5} {:>11} {:>8} {:>8}",
        "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)"
    );
}

pub(super) fn print_row(a: &BenchArgs, n: usize, driver: &str, row: &Row) {
    if a.json {
        println!(
            "{{\"op\":\"{}\",\"ranks\":{n},\"driver\":\"{driver}\",\"bytes\":{},\"count\":{},\"dtype\":\"{}\",\"time_us\":{:.3},\"algbw_gbps\":{:.6},\"busbw_gbps\":{:.6},\"check\":{}}}",
            op_name(a.op),
            row.bytes,
            row.count,
            dtype_name(a.dtype),
            row.time_us,
            row.algbw,
            row.busbw,
            json_string(&row.check)
        );
    } else {
        let redop = if reduces(a.op) {
            format!("{:?}", a.redop).to_ascii_lowercase()
        } else {
            "none".into()
        };
        let root = if rooted(a.op) { a.root as i64 } else { -1 };
        println!(
            "  {:>10} {:>12} {:>6} {:>6} {:>5} {:>11.1} {:>8.3} {:>8.3}  {}",
            row.bytes,
            row.count,
            dtype_name(a.dtype),
            redop,
            root,
            row.time_us,
            row.algbw,
            row.busbw,
            row.check
        );
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}
