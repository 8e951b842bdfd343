//! Exact arithmetic on Kubernetes quantities (`10Gi`, `1500Mi`, `500M`, `1e9`).
//!
//! Only what storage sizing needs: parse, compare, scale by a factor and
//! print back as a valid quantity. Values are kept in thousandths of a unit
//! (the finest precision a quantity has), so nothing is rounded by floats.

use std::{cmp::Ordering, fmt};

/// A non-negative quantity, held exactly as thousandths of its base unit.
/// Equal and ordered by value: `1Gi == 1024Mi`.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    millis: u128,
    binary: bool,
}

/// Why a string is not a quantity we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a valid quantity (expected a number with an optional suffix such as Gi, Mi, G or M)"
)]
pub struct ParseQuantityError {
    input: String,
}

const BINARY: [(&str, u32); 6] = [
    ("Ki", 1),
    ("Mi", 2),
    ("Gi", 3),
    ("Ti", 4),
    ("Pi", 5),
    ("Ei", 6),
];
const DECIMAL: [(&str, u32); 6] = [("k", 1), ("M", 2), ("G", 3), ("T", 4), ("P", 5), ("E", 6)];

impl Quantity {
    /// Parse a Kubernetes quantity. Negative values are refused.
    pub fn parse(input: &str) -> Result<Self, ParseQuantityError> {
        let err = || ParseQuantityError {
            input: input.to_string(),
        };
        let s = input.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let digits: String = format!("{whole}{frac}");
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err())?
        };
        // mantissa / 10^frac_len, times the suffix multiplier, times 1000 (millis).
        let frac_len = frac.len() as u32;
        let (num, den, binary): (u128, u128, bool) = if suffix.is_empty() {
            (1000, 1, false)
        } else if suffix == "m" {
            (1, 1, false)
        } else if let Some((_, p)) = BINARY.iter().find(|(s, _)| *s == suffix) {
            (1000 * 1024u128.pow(*p), 1, true)
        } else if let Some((_, p)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
            (1000 * 1000u128.pow(*p), 1, false)
        } else if let Some(exp) = suffix
            .strip_prefix('e')
            .or_else(|| suffix.strip_prefix('E'))
        {
            let exp: i32 = exp.parse().map_err(|_| err())?;
            if !(-3..=18).contains(&exp) {
                return Err(err());
            }
            if exp >= 0 {
                (1000 * 10u128.pow(exp as u32), 1, false)
            } else {
                (1000, 10u128.pow((-exp) as u32), false)
            }
        } else {
            return Err(err());
        };
        let scaled = mantissa.checked_mul(num).ok_or_else(err)?;
        let den = den * 10u128.pow(frac_len);
        // Kubernetes rounds sub-milli precision up.
        let millis = scaled.div_ceil(den);
        Ok(Self { millis, binary })
    }

    /// The value in whole base units, rounded up.
    pub fn ceil_units(&self) -> u128 {
        self.millis.div_ceil(1000)
    }

    /// `factor × self`, rounded up to a whole unit and then to a size a
    /// storage provisioner takes without surprise: a whole MiB for binary
    /// input (whole MB for decimal input) once the result is at least that
    /// large. `factor` is taken to three decimal places, rounded up. None
    /// when the product does not fit (a factor of 1e300, say).
    pub fn scale_up(&self, factor: f64) -> Option<Self> {
        // A cast saturates: an infinite or huge factor becomes u128::MAX,
        // which the checked product then refuses.
        let factor_millis = (factor * 1000.0).ceil().max(0.0) as u128;
        let millis = self.millis.checked_mul(factor_millis)?.div_ceil(1000);
        let units = millis.div_ceil(1000);
        let step: u128 = if self.binary {
            1024 * 1024
        } else {
            1000 * 1000
        };
        let units = if units >= step {
            units.div_ceil(step).checked_mul(step)?
        } else {
            units
        };
        Some(Self {
            millis: units.checked_mul(1000)?,
            binary: self.binary,
        })
    }
}

/// The largest volume the operator requests: 2^63 - 1 bytes (just under
/// 8 EiB), the most Kubernetes counts in the 64-bit integer its components
/// read a quantity's value as.
pub const MAX_VOLUME_BYTES: u128 = i64::MAX as u128;

/// The volume to request for `data_size` of data: `ceil(sizeFactor × size)`,
/// room for a restore's second copy of the data (DESIGN.md, storage sizing).
/// None when that is more than [`MAX_VOLUME_BYTES`].
pub fn volume_size(data_size: Quantity, size_factor: f64) -> Option<Quantity> {
    data_size
        .scale_up(size_factor)
        .filter(|q| q.ceil_units() <= MAX_VOLUME_BYTES)
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.millis == other.millis
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis.cmp(&other.millis)
    }
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix that keeps the value whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.millis.is_multiple_of(1000) {
            return write!(f, "{}m", self.millis);
        }
        let units = self.millis / 1000;
        if units == 0 {
            return write!(f, "0");
        }
        let (base, table): (u128, &[(&str, u32)]) = if self.binary {
            (1024, &BINARY)
        } else {
            (1000, &DECIMAL)
        };
        for (suffix, power) in table.iter().rev() {
            let m = base.pow(*power);
            if units.is_multiple_of(m) {
                return write!(f, "{}{}", units / m, suffix);
            }
        }
        write!(f, "{units}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (input, canonical) in [
            ("10Gi", "10Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("500M", "500M"),
            ("1000M", "1G"),
            ("1e9", "1G"),
            ("2048", "2048"),
            ("0", "0"),
            ("1500m", "1500m"),
        ] {
            assert_eq!(
                Quantity::parse(input).unwrap().to_string(),
                canonical,
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for bad in ["", "Gi", "-1Gi", "10 GB", "1.2.3Gi", "10gi", "abc"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_volume_beyond_what_kubernetes_counts_is_none_not_an_overflow() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("11Gi").scale_up(1e300), None);
        assert_eq!(q("11Gi").scale_up(f64::INFINITY), None);
        assert_eq!(volume_size(q("11Gi"), 1e300), None);
        assert_eq!(volume_size(q("9223372036854775807"), 2.5), None);
        assert_eq!(volume_size(q("1Ei"), 2.5), Some(q("2560Pi")));
        assert_eq!(volume_size(q("3Ei"), 2.5), Some(q("7680Pi")));
        assert_eq!(volume_size(q("4Ei"), 2.5), None);
    }

    #[test]
    fn compares_across_suffixes() {
        let q = |s| Quantity::parse(s).unwrap();
        assert!(q("1Gi") > q("1G"));
        assert!(q("1024Mi") == q("1Gi"));
        assert!(q("999Mi") < q("1Gi"));
    }
}
