//! Kubernetes resource quantities (`500m`, `1.5`, `2Gi`, `129M`, `1e3`).
//!
//! Grammar from k8s.io/apimachinery/pkg/api/resource: an optional sign, a
//! decimal number, then a binary suffix (Ki..Ei), a decimal suffix (n, u, m, "",
//! k, M, G, T, P, E) or a decimal exponent (e3, E-2). Values are kept exactly as
//! a count of nano-units in an i128, which holds 8Ei with room to spare.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Quantity {
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let bad = |why: &str| QuantityError(format!("{text:?} is not a valid quantity: {why}"));
        let s = text.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("no digits"));
        }
        if frac_part.contains('.') {
            return Err(bad("two decimal points"));
        }
        // Scale as a power of ten (decimal) or a power of two (binary).
        let (pow10, pow2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let exp = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))
                    .ok_or_else(|| bad(&format!("unknown suffix {suffix:?}")))?;
                let e: i32 = exp
                    .parse()
                    .map_err(|_| bad(&format!("bad exponent {suffix:?}")))?;
                if !(-30..=30).contains(&e) {
                    return Err(bad("exponent out of range"));
                }
                (e, 0)
            }
        };
        // mantissa = int_part.frac_part as an integer times 10^-len(frac)
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(bad("too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad("bad digits"))?
        };
        // nanos = mantissa * 10^(pow10 + 9 - len(frac)) * 2^pow2, rounded up
        // in magnitude when the scale is negative (as Kubernetes rounds up).
        let scale = pow10 + 9 - frac_part.len() as i32;
        let overflow = || bad("too large");
        let mut value = mantissa.checked_mul(1i128 << pow2).ok_or_else(overflow)?;
        if scale >= 0 {
            value = value
                .checked_mul(10i128.checked_pow(scale as u32).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
        } else {
            // A divisor beyond i128 (many fraction digits, `0.000…1`) leaves
            // less than one nano-unit: it rounds up to one.
            let div = 10i128.checked_pow((-scale) as u32).unwrap_or(i128::MAX);
            value = value / div + i128::from(value % div != 0);
        }
        if value > 8 * (1i128 << 60) * NANO {
            return Err(overflow());
        }
        Ok(Quantity {
            nanos: if negative { -value } else { value },
        })
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// A whole number of units (`2`, `1k`; not `1.5` or `500m`).
    pub fn is_integer(&self) -> bool {
        self.nanos % NANO == 0
    }

    /// Whether this is a whole multiple of `unit` (a hugepage size).
    pub fn is_multiple_of(&self, unit: &Quantity) -> bool {
        unit.nanos != 0 && self.nanos % unit.nanos == 0
    }

    /// Value in thousandths, rounded up (CPU in millicores).
    pub fn milli_ceil(&self) -> i64 {
        ceil_div(self.nanos, 1_000_000) as i64
    }

    /// Value in units, rounded up (memory in bytes).
    pub fn value_ceil(&self) -> i64 {
        ceil_div(self.nanos, NANO) as i64
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_table() {
        for (text, milli) in [
            ("0", 0),
            ("1m", 1),
            ("100m", 100),
            ("0.1", 100),
            ("1.5", 1500),
            ("2", 2000),
            (".5", 500),
            ("1e3", 1_000_000),
            ("0.0001", 1), // rounds up
            ("1500u", 2),  // 1.5m rounds up
            ("250000000n", 250),
        ] {
            assert_eq!(Quantity::parse(text).unwrap().milli_ceil(), milli, "{text}");
        }
    }

    #[test]
    fn memory_table() {
        for (text, bytes) in [
            ("128974848", 128_974_848i64),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("2Gi", 2 * 1024 * 1024 * 1024),
            ("1Ki", 1024),
            ("1k", 1000),
            ("0.5Gi", 512 * 1024 * 1024),
            ("1.5Mi", 1_572_864),
        ] {
            assert_eq!(Quantity::parse(text).unwrap().value_ceil(), bytes, "{text}");
        }
    }

    #[test]
    fn negative_and_invalid() {
        assert!(Quantity::parse("-1Mi").unwrap().is_negative());
        assert!(!Quantity::parse("+1Mi").unwrap().is_negative());
        for bad in [
            "", "Mi", "1.2.3", "1MB", "1 Gi", "abc", "1e", "1e99", "--1", "1ki",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be refused");
        }
        // Long fractions round up instead of overflowing.
        let tiny = format!("0.{}1", "0".repeat(100));
        assert_eq!(Quantity::parse(&tiny).unwrap().milli_ceil(), 1);
        assert!(Quantity::parse(&format!("{tiny}Ei")).is_ok());
        let msg = Quantity::parse("12XB").unwrap_err().to_string();
        assert!(msg.contains("12XB") && msg.contains("suffix"), "{msg}");
    }

    #[test]
    fn ordering_follows_value() {
        let a = Quantity::parse("1Gi").unwrap();
        let b = Quantity::parse("1G").unwrap();
        assert!(a > b);
        assert_eq!(
            Quantity::parse("1000m").unwrap(),
            Quantity::parse("1").unwrap()
        );
    }
}
