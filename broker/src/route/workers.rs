//! Conversion workers: converting HL7 v2 to FHIR is pure CPU work, record by
//! record, so a route with a backlog (a burst, a catch-up after a stop)
//! converts it on every core instead of on the routes' one thread.
//!
//! Only the transform runs on the workers: records are still read, counted,
//! capped and written by the route, in source order, so nothing about
//! ordering or the atomic batch changes. A route with one record to do
//! converts it itself, as handing it over would only add latency.

use rayon::prelude::*;

/// Fewest records worth handing to the workers: below this, waking them
/// costs more than it saves.
const MIN_PARALLEL: usize = 4;

/// Records each worker takes per round of a route's batch: enough to keep
/// a handover's cost small, few enough that a batch cut short by its byte
/// cap wastes little conversion.
const PER_THREAD_ROUND: usize = 16;

/// The pool of conversion threads (`[mapping] threads`), shared by every
/// route.
pub struct Workers {
    /// `None` with one thread: routes convert on their own thread.
    pool: Option<rayon::ThreadPool>,
}

impl Workers {
    /// A pool of `threads` (named `medbus-convert-N`); one (or a pool the
    /// system refuses) means no pool.
    pub fn new(threads: usize) -> Workers {
        if threads <= 1 {
            return Workers { pool: None };
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("medbus-convert-{i}"))
            .build();
        match pool {
            Ok(pool) => Workers { pool: Some(pool) },
            Err(e) => {
                tracing::warn!(threads, error = %e, "conversion threads not started: routes convert on their own thread");
                Workers { pool: None }
            }
        }
    }

    /// Conversion threads (1 when there is no pool).
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(1, rayon::ThreadPool::current_num_threads)
    }

    /// How many records a route should transform per round: one without a
    /// pool (each is used at once, nothing is done ahead).
    pub fn round(&self) -> usize {
        match &self.pool {
            Some(_) => self.threads() * PER_THREAD_ROUND,
            None => 1,
        }
    }

    /// `f` of every item, in order: on the pool when there is one and the
    /// items are enough, otherwise on the calling thread (which waits for
    /// the pool either way).
    pub fn map<'i, T: Sync, R: Send>(
        &self,
        items: &'i [T],
        f: impl Fn(&'i T) -> R + Sync + Send,
    ) -> Vec<R> {
        match &self.pool {
            Some(pool) if items.len() >= MIN_PARALLEL => {
                pool.install(|| items.par_iter().with_min_len(2).map(f).collect())
            }
            _ => items.iter().map(f).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_results_in_the_same_order_with_or_without_a_pool() {
        let items: Vec<u64> = (0..1000).collect();
        let square = |x: &u64| (x * x, std::thread::current().name().map(str::to_string));
        let alone = Workers::new(1).map(&items, square);
        let pool = Workers::new(2);
        let shared = pool.map(&items, square);
        let values = |v: &[(u64, Option<String>)]| v.iter().map(|(x, _)| *x).collect::<Vec<_>>();
        assert_eq!(values(&alone), values(&shared));
        assert_eq!(
            values(&alone),
            items.iter().map(|x| x * x).collect::<Vec<_>>()
        );
        // The pool did the work, on its named threads.
        assert!(shared.iter().all(|(_, name)| name
            .as_deref()
            .is_some_and(|n| n.starts_with("medbus-convert-"))));
        assert_eq!(pool.threads(), 2);
        assert_eq!(pool.round(), 32);
        assert_eq!(Workers::new(1).round(), 1);
        // Too few items to be worth a handover: the caller does them.
        let few = pool.map(&items[..2], square);
        assert!(few.iter().all(|(_, name)| !name
            .as_deref()
            .unwrap_or_default()
            .starts_with("medbus-convert-")));
    }
}
