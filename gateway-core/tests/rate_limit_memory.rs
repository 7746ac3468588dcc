//! Issue 11 item 4: rate-limit memory per key does not grow with the key's size. 20k keys of 16 KiB
//! once took +316 MiB (raw keys were stored); with 128-bit digests the local store holds a few dozen
//! bytes per entry. Measured with a heap probe (a counting global allocator, which is why this test
//! has its own binary).
use gateway_core::policy::rate_limit::{LimitSpec, RateLimiter, RateLimiterConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static NET: Cell<isize> = const { Cell::new(0) };
}

/// Counts bytes allocated minus freed on the current thread only.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = NET.try_with(|c| c.set(c.get() + l.size() as isize));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = NET.try_with(|c| c.set(c.get() - l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = NET.try_with(|c| c.set(c.get() + new as isize - l.size() as isize));
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn net() -> isize {
    NET.with(Cell::get)
}

#[test]
fn local_memory_is_bounded_per_key_whatever_its_size() {
    const T0: u64 = 1_700_000_040_000;
    let l = RateLimiter::new(
        vec![LimitSpec::new("per-min", Duration::from_secs(60), 100)],
        RateLimiterConfig::default(),
    )
    .expect("limiter");
    let r = l.limit_ref("per-min").expect("limit");
    let mut key = vec![b'k'; 16 * 1024];
    let before = net();
    const N: usize = 20_000;
    for i in 0..N {
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let d = l.check_all_local(&[(r, &key)], 1, T0).expect("local");
        assert!(d.admitted);
    }
    let grown = net() - before;
    assert_eq!(l.local_keys().0, N);
    let per_key = grown / N as isize;
    assert!(
        per_key <= 256,
        "{per_key} heap bytes per 16 KiB key ({grown} for {N})"
    );
    // exact counting is unchanged: each key has its own counter
    key[..8].copy_from_slice(&7u64.to_le_bytes());
    assert_eq!(l.local_counts(r, &key), Some((T0 / 60_000, 0, 1)));
}
