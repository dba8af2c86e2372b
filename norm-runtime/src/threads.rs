//! The in-process [`Collective`]: members are threads of one process (tests, and data
//! parallelism on one machine).
//!
//! ```
//! use norm_runtime::{Collective, ThreadGroup};
//!
//! let members = ThreadGroup::new(3);
//! let gathered: Vec<Vec<f64>> = std::thread::scope(|s| {
//!     let handles: Vec<_> = members
//!         .iter()
//!         .map(|m| {
//!             s.spawn(move || {
//!                 let mut out = Vec::new();
//!                 m.all_gather(&[m.rank() as f64, 10.0], &mut out).unwrap();
//!                 out
//!             })
//!         })
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).collect()
//! });
//! for out in gathered {
//!     assert_eq!(out, [0.0, 10.0, 1.0, 10.0, 2.0, 10.0]);
//! }
//! ```

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::collective::Collective;

/// What the members of a [`ThreadGroup`] share.
struct State {
    /// Completed exchanges; a member waits for this to move past the round it joined.
    round: u64,
    /// Members that have contributed to the current round.
    arrived: usize,
    /// The current round's contributions, one slot per rank.
    slots: Vec<Vec<f64>>,
    /// The result of the last completed round: the contributions in rank order, or why
    /// the round failed (every member gets the same answer).
    result: Result<Vec<f64>, String>,
    /// The rank of a member that was dropped: the group can no longer complete a round.
    left: Option<usize>,
}

/// A group of threads of one process that normalize one global batch together: the
/// in-process implementation of [`Collective`].
///
/// [`ThreadGroup::new`] makes the `k` members; hand one [`ThreadMember`] to each thread
/// (for instance with [`std::thread::scope`]), each thread holding its own copy of the
/// layer and its own micro-batch, and call the layer's `forward_sync`/`backward_sync` with
/// the member. An exchange waits until every member has called it (a [`Mutex`] and a
/// [`Condvar`]), so every member must make the same sequence of calls — also a member
/// whose micro-batch is empty. The group is reusable for any number of exchanges.
///
/// Run every member on a thread of its own (`std::thread::scope`, `std::thread::spawn`),
/// not as tasks of a thread pool such as rayon's: an exchange blocks its thread until all
/// members arrive, so members queued behind blocked ones on a smaller pool would never
/// arrive. (The layers' own kernels use rayon's pool from the members' threads; that is
/// fine.)
///
/// Cost, per synchronized stage and training step: one exchange of 3 `f64` per statistics
/// group forward and one of 2 backward, through shared memory (a lock and a wake-up per
/// exchange). A group of one exchanges nothing.
///
/// A member that is dropped (its thread finished or panicked) while the others still
/// exchange makes their exchanges fail with an error instead of waiting forever.
pub struct ThreadGroup {
    size: usize,
    state: Mutex<State>,
    done: Condvar,
}

impl fmt::Debug for ThreadGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadGroup")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ThreadGroup {
    /// Makes a group of `k` members, ranks `0..k` in order. `k = 0` gives no members.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> Vec<ThreadMember> {
        let group = Arc::new(ThreadGroup {
            size: k,
            state: Mutex::new(State {
                round: 0,
                arrived: 0,
                slots: vec![Vec::new(); k],
                result: Ok(Vec::new()),
                left: None,
            }),
            done: Condvar::new(),
        });
        (0..k)
            .map(|rank| ThreadMember {
                rank,
                group: Arc::clone(&group),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A member that panicked while holding the lock leaves consistent state behind
        // (every update is completed before anything can panic).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One member of a [`ThreadGroup`]: implements [`Collective`] with rank
/// [`rank`](Collective::rank) among [`size`](Collective::size) members. Not `Clone`: each
/// rank exists once. Send it to the thread that runs this rank.
pub struct ThreadMember {
    rank: usize,
    group: Arc<ThreadGroup>,
}

impl fmt::Debug for ThreadMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadMember")
            .field("rank", &self.rank)
            .field("size", &self.group.size)
            .finish()
    }
}

impl Collective for ThreadMember {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.group.size
    }

    /// Waits until every member has called `all_gather` for this round, then returns the
    /// contributions in rank order. If the members passed different lengths, every member
    /// gets the same error (and the group stays usable); if a member was dropped, the
    /// waiting members get an error.
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        let group = &*self.group;
        let mut st = group.lock();
        if let Some(r) = st.left {
            return Err(format!(
                "member {r} of the thread group was dropped before this exchange"
            ));
        }
        let round = st.round;
        let slot = &mut st.slots[self.rank];
        slot.clear();
        slot.extend_from_slice(local);
        st.arrived += 1;
        if st.arrived == group.size {
            // The last member in: publish, start the next round, wake the others. The
            // previous result is no longer read by anyone (every member has left the
            // previous round, since every member has joined this one).
            let len = st.slots[0].len();
            st.result = match st.slots.iter().position(|s| s.len() != len) {
                Some(r) => Err(format!(
                    "all_gather lengths differ: member 0 passed {len} values, member {r} passed {}",
                    st.slots[r].len()
                )),
                None => {
                    // Reuse the previous result's buffer.
                    let mut all =
                        std::mem::replace(&mut st.result, Ok(Vec::new())).unwrap_or_default();
                    all.clear();
                    for s in &st.slots {
                        all.extend_from_slice(s);
                    }
                    Ok(all)
                }
            };
            st.arrived = 0;
            st.round = st.round.wrapping_add(1);
            group.done.notify_all();
        } else {
            while st.round == round {
                if let Some(r) = st.left {
                    return Err(format!(
                        "member {r} of the thread group was dropped during an exchange"
                    ));
                }
                st = group.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        // The result of `round` stays in place until every member (this one included) has
        // joined the next round.
        match &st.result {
            Ok(all) => {
                out.clear();
                out.extend_from_slice(all);
                Ok(())
            }
            Err(e) => Err(e.clone()),
        }
    }
}

impl Drop for ThreadMember {
    fn drop(&mut self) {
        let mut st = self.group.lock();
        if st.left.is_none() {
            st.left = Some(self.rank);
        }
        drop(st);
        self.group.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<R: Send>(k: usize, f: impl Fn(ThreadMember) -> R + Sync) -> Vec<R> {
        let members = ThreadGroup::new(k);
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = members.into_iter().map(|m| s.spawn(move || f(m))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn gathers_in_rank_order_many_rounds() {
        for k in 1..=8 {
            let outs = run(k, |m| {
                let mut out = Vec::new();
                let mut seen = Vec::new();
                for round in 0..200usize {
                    // Lengths vary across rounds (equal across members within a round).
                    let len = round % 4;
                    let local: Vec<f64> = (0..len)
                        .map(|i| (round * 1000 + m.rank() * 10 + i) as f64)
                        .collect();
                    m.all_gather(&local, &mut out).unwrap();
                    assert_eq!(out.len(), len * m.size());
                    for r in 0..m.size() {
                        for i in 0..len {
                            assert_eq!(out[r * len + i], (round * 1000 + r * 10 + i) as f64);
                        }
                    }
                    seen.push(out.iter().sum::<f64>());
                }
                seen
            });
            assert!(outs.windows(2).all(|w| w[0] == w[1]));
        }
    }

    #[test]
    fn different_lengths_fail_on_every_member_and_the_group_recovers() {
        let outs = run(3, |m| {
            let mut out = Vec::new();
            let local = vec![1.0; if m.rank() == 1 { 2 } else { 3 }];
            let first = m.all_gather(&local, &mut out);
            let second = m
                .all_gather(&[m.rank() as f64], &mut out)
                .map(|()| out.clone());
            (first, second)
        });
        for (first, second) in outs {
            assert!(first.unwrap_err().contains("lengths differ"));
            assert_eq!(second.unwrap(), [0.0, 1.0, 2.0]);
        }
    }

    #[test]
    fn a_dropped_member_fails_the_others_instead_of_hanging() {
        let outs = run(3, |m| {
            if m.rank() == 2 {
                drop(m);
                return Ok(());
            }
            let mut out = Vec::new();
            m.all_gather(&[1.0], &mut out)
        });
        assert!(outs[0].as_ref().unwrap_err().contains("dropped"));
        assert!(outs[1].as_ref().unwrap_err().contains("dropped"));
    }

    #[test]
    fn members_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadMember>();
        let m = ThreadGroup::new(2);
        assert_eq!((m[1].rank(), m[1].size()), (1, 2));
        assert!(format!("{:?}", m[0]).contains("rank: 0"));
    }
}
