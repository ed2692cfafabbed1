//! Kubernetes resource quantities (`500m`, `1.5`, `2Gi`, `129M`, `1e3`).
//!
//! Grammar from k8s.io/apimachinery/pkg/api/resource: an optional sign, a
//! decimal number (`5`, `.5`, `5.`, `1.25`), then a binary suffix (Ki..Ei), a
//! decimal suffix (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (e3,
//! E-2). Values are kept as a count of nano-units in an i128, rounded up to
//! the next nano-unit as Kubernetes rounds (`if you want some resources, you
//! should get some`), and capped in magnitude at 2^63-1 units: apimachinery's
//! `maxAllowed`, which ParseQuantity applies to binary-suffixed quantities.
//! We apply the cap to every quantity, so `8Ei`, `8E` or `1e999` all parse to
//! the largest value rather than wrapping when they become an i64; every
//! conversion below saturates instead of wrapping.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

/// The largest magnitude, in nano-units: 2^63-1 units (apimachinery's
/// `maxAllowed`). Below 10^28, so a value with 29 integer digits is over it.
const MAX_NANOS: i128 = i64::MAX as i128 * NANO;

/// Decimal digits of MAX_NANOS: any number with more integer digits is larger.
const MAX_NANOS_DIGITS: usize = 28;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Clamps an i128 into an i64 (the conversions saturate, never wrap).
fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl Quantity {
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let bad = |why: &str| QuantityError(format!("{text:?} is not a valid quantity: {why}"));
        let s = text.trim();
        let (negative, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad(if s.is_empty() { "empty" } else { "no digits" }));
        }
        if frac_part.contains('.') {
            return Err(bad("two decimal points"));
        }
        // Scale as a power of ten (decimal) or a power of two (binary).
        let (pow10, pow2): (i64, u32) = match suffix {
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
                (
                    parse_exponent(exp).ok_or_else(|| bad(&format!("bad exponent {suffix:?}")))?,
                    0,
                )
            }
        };
        // nanos = int_part.frac_part * 10^(pow10 + 9) * 2^pow2, i.e. the
        // digits as an integer times 10^(pow10 + 9 - len(frac)).
        let digits: Vec<u8> = int_part
            .bytes()
            .chain(frac_part.bytes())
            .map(|b| b - b'0')
            .collect();
        let frac_len = i64::try_from(frac_part.len()).unwrap_or(i64::MAX);
        let magnitude = scaled_ceil(&digits, pow2, (pow10 + 9).saturating_sub(frac_len));
        Ok(Quantity {
            nanos: if negative { -magnitude } else { magnitude },
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

    /// Value in thousandths, rounded up (CPU in millicores), saturated at
    /// the ends of i64 (`8E` CPUs is more millicores than an i64 holds).
    pub fn milli_ceil(&self) -> i64 {
        saturate(ceil_div(self.nanos, 1_000_000))
    }

    /// Value in units, rounded up (memory in bytes); within i64 by the cap.
    pub fn value_ceil(&self) -> i64 {
        saturate(ceil_div(self.nanos, NANO))
    }
}

/// A decimal exponent (`3`, `+3`, `-30`). Its size only decides between
/// "capped" and "rounded up to one nano-unit", so a long one is clamped
/// rather than refused.
fn parse_exponent(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    const CLAMP: i64 = 1_000_000;
    let v = digits.parse::<i64>().map_or(CLAMP, |v| v.min(CLAMP));
    Some(if neg { -v } else { v })
}

/// `ceil(D * 2^pow2 * 10^pow10)` for the decimal digits `D`, capped at
/// MAX_NANOS. Exact for any number of digits: the product by 2^pow2 is done
/// on the digit string, and the power of ten only moves the decimal point.
fn scaled_ceil(digits: &[u8], pow2: u32, pow10: i64) -> i128 {
    let start = digits.iter().position(|d| *d != 0).unwrap_or(digits.len());
    let digits = &digits[start..];
    if digits.is_empty() {
        return 0;
    }
    // D * 2^pow2, least significant digit first. The carry stays below
    // 2^pow2 + 1, far inside u128.
    let factor = 1u128 << pow2;
    let mut product = Vec::with_capacity(digits.len() + 20);
    let mut carry = 0u128;
    for d in digits.iter().rev() {
        let t = u128::from(*d) * factor + carry;
        product.push(u8::try_from(t % 10).unwrap_or(0));
        carry = t / 10;
    }
    while carry > 0 {
        product.push(u8::try_from(carry % 10).unwrap_or(0));
        carry /= 10;
    }
    product.reverse();
    // Digits left of the decimal point once scaled by 10^pow10.
    let len = i64::try_from(product.len()).unwrap_or(i64::MAX);
    let int_len = len.saturating_add(pow10);
    if int_len <= 0 {
        // Below one nano-unit and not zero: rounds up to one.
        return 1;
    }
    if int_len > i64::try_from(MAX_NANOS_DIGITS).unwrap_or(i64::MAX) {
        return MAX_NANOS;
    }
    let int_len = usize::try_from(int_len).unwrap_or(MAX_NANOS_DIGITS);
    let mut value: i128 = 0;
    for i in 0..int_len {
        value = value * 10 + i128::from(product.get(i).copied().unwrap_or(0));
    }
    let remainder = product.iter().skip(int_len).any(|d| *d != 0);
    (value + i128::from(remainder)).min(MAX_NANOS)
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
            "", "Mi", "1.2.3", "1MB", "1 Gi", "abc", "1e", "--1", "1ki", "-", ".", "1e+", "1e1.5",
            "+-1", "1Kii", "1e3Ki",
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

    const MAX: i64 = i64::MAX;

    #[test]
    fn huge_values_cap_instead_of_wrapping() {
        for (text, milli, units) in [
            // 2^63 bytes: one more than an i64 holds; Kubernetes caps it.
            ("8Ei", MAX, MAX),
            ("8E", MAX, 8_000_000_000_000_000_000),
            ("9223372036854775807", MAX, MAX),
            ("9223372036854775808", MAX, MAX),
            ("100000000000", 100_000_000_000_000, 100_000_000_000),
            ("1e999", MAX, MAX),
            ("1e99999999999999999999999", MAX, MAX),
            ("99999999999999999999999999999999999999999999Ei", MAX, MAX),
            ("-8Ei", i64::MIN, -MAX),
        ] {
            let q = Quantity::parse(text).unwrap();
            assert_eq!((q.milli_ceil(), q.value_ceil()), (milli, units), "{text}");
        }
    }

    #[test]
    fn odd_but_valid_forms() {
        for (text, nanos) in [
            ("-0", 0),
            ("+0", 0),
            ("0.000", 0),
            ("5.", 5_000_000_000),
            (".5", 500_000_000),
            ("0.0000000000000000000000000000000099e-30", 1),
            ("1e-999", 1),
            ("1e-99999999999999999999", 1),
            ("1E3", 1_000_000_000_000),
            ("1e+3", 1_000_000_000_000),
            ("1.5e-9", 2),
            ("0.1n", 1),
            ("0.5Ki", 512_000_000_000),
            ("0.0009765625Ki", 1_000_000_000),
            ("0.00000000000000000000000000000000000000000000001Ki", 1),
            (
                "000000000000000000000000000000000000000000000001",
                1_000_000_000,
            ),
            (
                "1.000000000000000000000000000000000000000000000001",
                1_000_000_001,
            ),
        ] {
            let q = Quantity::parse(text).unwrap();
            assert_eq!(q.nanos, nanos, "{text}");
            assert!(!q.is_negative(), "{text}");
        }
        assert!(Quantity::parse("-0").unwrap().is_zero());
    }

    /// Quantity texts, valid or not: signs, digit runs of any length,
    /// decimal points, suffixes and exponents in every combination.
    fn quantity_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let sign = prop::sample::select(vec!["", "", "+", "-"]);
        let suffix = prop::sample::select(vec![
            "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
            "e", "E", "e-", "e+", "i", "KiB", "kk",
        ]);
        (
            sign,
            "[0-9]{0,60}",
            prop::option::of("\\.[0-9]{0,60}"),
            suffix,
            prop::option::of("-?[0-9]{1,25}"),
        )
            .prop_map(|(s, i, f, suf, e)| {
                format!(
                    "{s}{i}{}{suf}{}",
                    f.unwrap_or_default(),
                    e.unwrap_or_default()
                )
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// No text makes the parser or a conversion panic (a debug build
        /// checks every overflow), and a non-negative quantity never becomes
        /// a negative number of millicores, bytes or cgroup units.
        #[test]
        fn parse_and_conversions_never_panic_or_go_negative(text in quantity_text()) {
            if let Ok(q) = Quantity::parse(&text) {
                let (milli, units) = (q.milli_ceil(), q.value_ceil());
                if !q.is_negative() {
                    proptest::prop_assert!(milli >= 0 && units >= 0, "{text}: {milli} {units}");
                    proptest::prop_assert!(milli >= units.min(i64::MAX / 1000), "{text}");
                    use crate::cgroup::qos::{self, WeightFormula};
                    let shares = qos::cpu_shares(milli);
                    proptest::prop_assert!((2..=262_144).contains(&shares));
                    for formula in [WeightFormula::Linear, WeightFormula::Quadratic] {
                        let weight = qos::cpu_weight(shares, formula);
                        proptest::prop_assert!((1..=10_000).contains(&weight));
                    }
                    if let Some(quota) = qos::cpu_quota(milli) {
                        proptest::prop_assert!(
                            (1000..=qos::MAX_CFS_QUOTA_US).contains(&quota),
                            "{text}: quota {quota}"
                        );
                    }
                    if let Some(bytes) = qos::memory_limit(units) {
                        proptest::prop_assert!(bytes > 0, "{text}: memory {bytes}");
                    }
                } else {
                    proptest::prop_assert!(milli <= 0 && units <= 0, "{text}");
                }
            }
        }

        /// Any text at all: an error or a value, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            if let Ok(q) = Quantity::parse(&text) {
                let _ = (q.milli_ceil(), q.value_ceil());
            }
        }

        /// Integers round-trip exactly with and without suffixes.
        #[test]
        fn integers_are_exact(v in 0i64..=i64::MAX / 1024) {
            proptest::prop_assert_eq!(Quantity::parse(&v.to_string()).unwrap().value_ceil(), v);
            proptest::prop_assert_eq!(Quantity::parse(&format!("{v}Ki")).unwrap().value_ceil(), v * 1024);
            proptest::prop_assert_eq!(Quantity::parse(&format!("{v}m")).unwrap().milli_ceil(), v);
        }
    }
}
