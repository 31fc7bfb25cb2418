//! Money without floats: ISO 4217 currencies with their minor units, and decimal amounts that
//! travel as strings (`"49.00"`) so no JSON parser ever turns them into binary floats.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// ISO 4217 codes Wharf accepts, with the number of digits of their minor unit.
const CURRENCIES: &[(&str, u32)] = &[
    ("aed", 2),
    ("ars", 2),
    ("aud", 2),
    ("bgn", 2),
    ("bhd", 3),
    ("brl", 2),
    ("cad", 2),
    ("chf", 2),
    ("clp", 0),
    ("cny", 2),
    ("cop", 2),
    ("czk", 2),
    ("dkk", 2),
    ("egp", 2),
    ("eur", 2),
    ("gbp", 2),
    ("hkd", 2),
    ("huf", 2),
    ("idr", 2),
    ("ils", 2),
    ("inr", 2),
    ("isk", 0),
    ("jod", 3),
    ("jpy", 0),
    ("krw", 0),
    ("kwd", 3),
    ("mxn", 2),
    ("myr", 2),
    ("ngn", 2),
    ("nok", 2),
    ("nzd", 2),
    ("omr", 3),
    ("php", 2),
    ("pkr", 2),
    ("pln", 2),
    ("ron", 2),
    ("sar", 2),
    ("sek", 2),
    ("sgd", 2),
    ("thb", 2),
    ("tnd", 3),
    ("try", 2),
    ("twd", 2),
    ("uah", 2),
    ("usd", 2),
    ("vnd", 0),
    ("zar", 2),
];

/// An ISO 4217 currency, written in lowercase (`usd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    /// Looks a code up, case-insensitively.
    pub fn parse(code: &str) -> Result<Currency, String> {
        let lower = code.to_ascii_lowercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == lower)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| format!("`{code}` is not a supported ISO 4217 currency code"))
    }

    /// The lowercase code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point of the minor unit (2 for usd, 0 for jpy).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ISO 4217 currency code, lowercase"))
            .pattern(Some("^[a-zA-Z]{3}$"))
            .examples([serde_json::json!("usd")])
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Currency {}

/// A non-negative decimal amount written as a string (`"0.0010"`), never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub Decimal);

impl Amount {
    /// The whole units of a quantity (the deliveries of a usage or adjustment line), or an
    /// internal error for a negative or oversized one.
    pub fn whole_units(&self) -> Result<u64, crate::CoreError> {
        self.0
            .trunc()
            .to_string()
            .parse()
            .map_err(crate::CoreError::internal)
    }

    /// Parses a plain decimal string: digits, optionally a point and more digits.
    pub fn parse(s: &str) -> Result<Amount, String> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || !digits_ok(int)
            || !digits_ok(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(format!("`{s}` is not a decimal amount like \"49.00\""));
        }
        Decimal::from_str(s)
            .map(Amount)
            .map_err(|e| format!("`{s}` is not a valid amount: {e}"))
    }

    /// Digits after the decimal point as written.
    pub fn scale(&self) -> u32 {
        self.0.scale()
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal amount as a string, like \"49.00\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Non-negative decimal amount as a string"))
            .pattern(Some(r"^[0-9]+(\.[0-9]+)?$"))
            .examples([serde_json::json!("49.00")])
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Amount {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_know_their_minor_units() {
        assert_eq!(Currency::parse("USD").map(|c| c.minor_units()), Ok(2));
        assert_eq!(Currency::parse("jpy").map(|c| c.minor_units()), Ok(0));
        assert_eq!(Currency::parse("kwd").map(|c| c.minor_units()), Ok(3));
        assert!(Currency::parse("xyz").is_err());
    }

    #[test]
    fn amounts_are_plain_decimal_strings_only() {
        assert_eq!(Amount::parse("49.00").map(|a| a.scale()), Ok(2));
        for bad in ["", "-1", "1e3", "1.", ".5", "1,5", " 1", "NaN"] {
            assert!(Amount::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(
            serde_json::from_str::<Amount>("49.0").is_err(),
            "a JSON number is not accepted"
        );
    }
}
