//! The one "poll until ready" loop: xtask waits for engines, swarms,
//! stacks, volumes and gossip by asking again at an interval until the
//! answer is yes or time is up, and then says what it saw last.

use std::time::{Duration, Instant};

/// One look at the thing being waited for.
pub enum Look<T, S> {
    /// It is there: the wait is over.
    Ready(T),
    /// Not yet; what was seen, for the error if time runs out.
    NotYet(S),
}

/// Calls `look` every `interval` until it answers [`Look::Ready`], an error
/// (returned at once), or `timeout` has passed since the first look; then
/// the error is `timed_out(what the last look saw, time waited)`. Looks at
/// least once, also with a zero timeout.
pub fn until<T, S>(
    timeout: Duration,
    interval: Duration,
    mut look: impl FnMut() -> anyhow::Result<Look<T, S>>,
    timed_out: impl FnOnce(S, Duration) -> anyhow::Error,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        match look()? {
            Look::Ready(value) => return Ok(value),
            Look::NotYet(seen) => {
                if started.elapsed() >= timeout {
                    return Err(timed_out(seen, started.elapsed()));
                }
            }
        }
        std::thread::sleep(interval);
    }
}

/// The progress lines of one wait: a line is printed, after `prefix` and
/// the seconds since the wait began, only when it differs from the last.
pub struct Progress {
    prefix: &'static str,
    started: Instant,
    last: String,
}

impl Progress {
    pub fn new(prefix: &'static str) -> Progress {
        Progress {
            prefix,
            started: Instant::now(),
            last: String::new(),
        }
    }

    /// Prints `line` unless it is the one printed last.
    pub fn show(&mut self, line: &str) {
        if line != self.last {
            eprintln!(
                "{}[{:>3}s] {line}",
                self.prefix,
                self.started.elapsed().as_secs()
            );
            line.clone_into(&mut self.last);
        }
    }
}

/// [`until`] for waits whose running out of time is no error (teardown
/// goes on by force): calls `ready` every `interval` until it answers
/// true or `timeout` has passed since the first call, and says which.
pub fn until_true(timeout: Duration, interval: Duration, mut ready: impl FnMut() -> bool) -> bool {
    until(
        timeout,
        interval,
        || {
            Ok(if ready() {
                Look::Ready(())
            } else {
                Look::NotYet(())
            })
        },
        |(), waited| anyhow::anyhow!("not ready after {waited:?}"),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_the_first_ready_look_gives() {
        let mut looks = 0;
        let value = until(
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                looks += 1;
                Ok(if looks == 3 {
                    Look::Ready(looks)
                } else {
                    Look::NotYet(())
                })
            },
            |(), _| anyhow::anyhow!("timed out"),
        )
        .expect("ready at the third look");
        assert_eq!(value, 3);
    }

    #[test]
    fn times_out_with_what_the_last_look_saw() {
        let mut looks = 0;
        let error = until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || -> anyhow::Result<Look<(), u32>> {
                looks += 1;
                Ok(Look::NotYet(looks))
            },
            |last, waited| anyhow::anyhow!("look {last} after {waited:?}"),
        )
        .expect_err("never ready");
        assert!(looks >= 2, "looked {looks} times");
        assert_eq!(
            error.to_string().split(' ').nth(1),
            Some(looks.to_string().as_str())
        );
    }

    #[test]
    fn a_failed_look_ends_the_wait_at_once() {
        let mut looks = 0;
        let error = until(
            Duration::from_secs(60),
            Duration::ZERO,
            || -> anyhow::Result<Look<(), ()>> {
                looks += 1;
                anyhow::bail!("engine gone")
            },
            |(), _| anyhow::anyhow!("timed out"),
        )
        .expect_err("the look fails");
        assert_eq!(looks, 1);
        assert_eq!(error.to_string(), "engine gone");
    }

    #[test]
    fn until_true_says_whether_it_was_reached() {
        let mut looks = 0;
        assert!(until_true(Duration::from_secs(5), Duration::ZERO, || {
            looks += 1;
            looks == 2
        }));
        assert!(!until_true(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || false
        ));
    }

    #[test]
    fn a_zero_timeout_still_looks_once() {
        let value = until(
            Duration::ZERO,
            Duration::ZERO,
            || Ok(Look::<_, ()>::Ready("there")),
            |(), _| anyhow::anyhow!("timed out"),
        )
        .expect("ready at once");
        assert_eq!(value, "there");
    }
}
