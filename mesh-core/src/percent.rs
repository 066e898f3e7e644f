//! Percentages as Istio writes them (`percentage: {value: 0.1}`): 0 to 100, with fractions.

use std::fmt;

/// A percentage in `[0, 100]`. Constructed only through [`Percent::new`], so every value a
/// layer sees is in range.
#[derive(Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    pub const ZERO: Percent = Percent(0.0);
    pub const HUNDRED: Percent = Percent(100.0);

    /// `None` unless `0 <= value <= 100`.
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=100.0).contains(&value).then_some(Percent(value))
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// Whether a uniform draw `r` in `[0, 1)` falls in this share: the decision of a fault,
    /// mirror or sampling percentage, pure so it can be tested.
    pub fn hit(self, r: f64) -> bool {
        r * 100.0 < self.0
    }
}

impl fmt::Debug for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range() {
        assert!(Percent::new(-0.1).is_none());
        assert!(Percent::new(100.1).is_none());
        assert!(Percent::new(f64::NAN).is_none());
        assert!(Percent::HUNDRED.hit(0.999_999));
        assert!(!Percent::ZERO.hit(0.0));
        assert!(Percent::new(0.1).unwrap().hit(0.0009));
        assert!(!Percent::new(0.1).unwrap().hit(0.0011));
    }
}
