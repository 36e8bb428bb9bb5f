//! Fault injection for `serve --fault`: per request, a seeded RNG decides whether to delay, fail
//! with 500 or 503, drop the connection before applying the request (`reset`) or after applying it
//! (`lost-response`). Seeded, so a failing reliability test can be replayed exactly.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub error500: f64,
    pub throttle503: f64,
    pub reset: f64,
    pub lost_response: f64,
    /// Every request waits this long first (with probability `delay_rate`).
    pub delay: Option<Duration>,
    pub delay_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --fault {spec:?}: {why} (expected KIND:RATE[,KIND:RATE], kinds error500, throttle503, reset, lost-response, delay:MS[:RATE])")]
pub struct FaultSpecError {
    pub spec: String,
    pub why: String,
}

impl FaultPlan {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Parses `error500:0.1,lost-response:0.05,reset:0.02,delay:200` (`delay:MS` or
    /// `delay:MS:RATE`; rates are probabilities in 0..=1).
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let err = |why: String| FaultSpecError {
            spec: spec.to_string(),
            why,
        };
        let rate = |s: &str| -> Result<f64, FaultSpecError> {
            let r: f64 = s
                .parse()
                .map_err(|_| err(format!("rate {s:?} is not a number")))?;
            if (0.0..=1.0).contains(&r) {
                Ok(r)
            } else {
                Err(err(format!("rate {r} is outside 0..1")))
            }
        };
        let mut plan = FaultPlan::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut parts = item.split(':');
            let kind = parts.next().unwrap_or_default();
            let arg = parts
                .next()
                .ok_or_else(|| err(format!("{kind:?} needs a value")))?;
            match kind {
                "error500" => plan.error500 = rate(arg)?,
                "throttle503" => plan.throttle503 = rate(arg)?,
                "reset" => plan.reset = rate(arg)?,
                "lost-response" => plan.lost_response = rate(arg)?,
                "delay" => {
                    let ms: u64 = arg
                        .parse()
                        .map_err(|_| err(format!("delay {arg:?} is not milliseconds")))?;
                    plan.delay = Some(Duration::from_millis(ms));
                    plan.delay_rate = match parts.next() {
                        Some(r) => rate(r)?,
                        None => 1.0,
                    };
                }
                other => return Err(err(format!("unknown kind {other:?}"))),
            }
            if parts.next().is_some() {
                return Err(err(format!("too many values in {item:?}")));
            }
        }
        Ok(plan)
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub delay: Option<Duration>,
    pub error500: bool,
    pub throttle503: bool,
    pub reset: bool,
    pub lost_response: bool,
}

pub struct Injector {
    plan: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
}

impl Injector {
    pub fn new(plan: FaultPlan, seed: u64) -> Self {
        Injector {
            plan: Mutex::new(plan),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// One draw per kind, in a fixed order, so the sequence depends only on the seed and the
    /// number of requests.
    pub fn decide(&self) -> Decision {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if plan.is_empty() {
            return Decision::default();
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut hit = |p: f64| p > 0.0 && rng.random::<f64>() < p;
        let delay = plan.delay.filter(|_| hit(plan.delay_rate));
        let error500 = hit(plan.error500);
        let throttle503 = hit(plan.throttle503);
        let reset = hit(plan.reset);
        let lost_response = hit(plan.lost_response);
        Decision {
            delay,
            error500,
            throttle503,
            reset,
            lost_response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let p = FaultPlan::parse("error500:0.1,lost-response:0.05,reset:0.02,delay:200").unwrap();
        assert_eq!(p.error500, 0.1);
        assert_eq!(p.lost_response, 0.05);
        assert_eq!(p.reset, 0.02);
        assert_eq!(p.delay, Some(Duration::from_millis(200)));
        assert_eq!(p.delay_rate, 1.0);
        assert_eq!(FaultPlan::parse("delay:5:0.5").unwrap().delay_rate, 0.5);
        assert!(FaultPlan::parse("").unwrap().is_empty());
        for bad in [
            "error500",
            "error500:2",
            "boom:0.1",
            "delay:x",
            "reset:0.1:3",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeded_and_roughly_at_rate() {
        let plan = FaultPlan::parse("error500:0.3").unwrap();
        let a = Injector::new(plan.clone(), 42);
        let b = Injector::new(plan, 42);
        let da: Vec<_> = (0..1000).map(|_| a.decide()).collect();
        let db: Vec<_> = (0..1000).map(|_| b.decide()).collect();
        assert_eq!(da, db);
        let hits = da.iter().filter(|d| d.error500).count();
        assert!((200..400).contains(&hits), "{hits}");
        assert!(da.iter().all(|d| !d.reset && !d.lost_response));
    }
}
