//! Phone numbers to E.164 (`+962791234567`), when that is certain.
//!
//! Providers send numbers as people type them: `0791234567` (Jordanian,
//! national format with the trunk `0`), `+965 5000 0123`, `00447946000321`,
//! `+44 (0)20 7946 0321`, Arabic-Indic digits. [`normalize`] turns them into
//! E.164 using the account's country (ISO 3166-1 alpha-2, `country` in the hub
//! config) for numbers without a country code. When the result is not
//! certain (letters, a masked number such as `*****` or `N/A`, an unknown
//! country, a length the country's numbering plan does not have), the
//! provider's text is kept unchanged: a wrong "normalised" number is worse
//! than an odd-looking right one.
//!
//! # The calling-code table
//! [`COUNTRIES`] covers the markets the providers serve: the Middle East
//! (Careem, Talabat, Deliveroo in the Gulf), the UK and Europe (Deliveroo,
//! Just Eat, Uber Eats, Wolt). Each row is the country calling code, whether
//! the national format starts with a trunk `0` that E.164 drops, and the
//! lengths a national significant number (the digits after the calling code)
//! can have, from the ITU-T E.164 national numbering plans. Countries whose
//! plans do not fit these rules simply (Hungary's trunk `06`, Lithuania's
//! `8`, open plans like Austria's) are left out: their numbers are kept as
//! sent unless they already carry `+` or `00`. To add a country, add a row
//! (the table is sorted by country code; a test checks).

/// One numbering plan: calling code, trunk prefix `0`, national significant
/// number lengths (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub country: &'static str,
    pub calling_code: &'static str,
    pub trunk_zero: bool,
    pub min_len: usize,
    pub max_len: usize,
}

const fn plan(
    country: &'static str,
    calling_code: &'static str,
    trunk_zero: bool,
    min_len: usize,
    max_len: usize,
) -> Plan {
    Plan {
        country,
        calling_code,
        trunk_zero,
        min_len,
        max_len,
    }
}

/// Sorted by country code.
#[rustfmt::skip]
pub const COUNTRIES: &[Plan] = &[
    plan("AE", "971", true, 8, 9),   // UAE: mobile 5X XXX XXXX
    plan("BE", "32", true, 8, 9),
    plan("BG", "359", true, 8, 9),
    plan("BH", "973", false, 8, 8),  // Bahrain: no trunk prefix
    plan("CH", "41", true, 9, 9),
    plan("CY", "357", false, 8, 8),
    plan("CZ", "420", false, 9, 9),
    plan("DE", "49", true, 6, 11),
    plan("DK", "45", false, 8, 8),
    plan("EE", "372", false, 7, 8),
    plan("EG", "20", true, 8, 10),   // Egypt: mobile 1X XXXX XXXX
    plan("ES", "34", false, 9, 9),
    plan("FI", "358", true, 5, 12),
    plan("FR", "33", true, 9, 9),
    plan("GB", "44", true, 9, 10),
    plan("GR", "30", false, 10, 10),
    plan("HR", "385", true, 8, 9),
    plan("IE", "353", true, 7, 9),
    plan("IQ", "964", true, 8, 10),
    plan("IS", "354", false, 7, 7),
    plan("IT", "39", false, 6, 11),  // Italy: the leading 0 of landlines is part of the number
    plan("JO", "962", true, 8, 9),   // Jordan: mobile 7X XXX XXXX
    plan("KW", "965", false, 8, 8),  // Kuwait: no trunk prefix
    plan("LB", "961", true, 7, 8),
    plan("LV", "371", false, 8, 8),
    plan("MT", "356", false, 8, 8),
    plan("NL", "31", true, 9, 9),
    plan("NO", "47", false, 8, 8),
    plan("OM", "968", false, 8, 8),  // Oman: no trunk prefix
    plan("PL", "48", false, 9, 9),
    plan("PS", "970", true, 8, 9),
    plan("PT", "351", false, 9, 9),
    plan("QA", "974", false, 7, 8),  // Qatar: no trunk prefix
    plan("RO", "40", true, 9, 9),
    plan("SA", "966", true, 8, 9),   // Saudi Arabia: mobile 5X XXX XXXX
    plan("SE", "46", true, 7, 9),
    plan("SI", "386", true, 8, 8),
    plan("SK", "421", true, 9, 9),
    plan("TR", "90", true, 10, 10),
];

/// The numbering plan of an ISO 3166-1 alpha-2 country, if the table has it.
pub fn plan_of(country: &str) -> Option<&'static Plan> {
    COUNTRIES
        .binary_search_by(|p| p.country.cmp(country))
        .ok()
        .map(|i| &COUNTRIES[i])
}

/// E.164 allows at most 15 digits; fewer than 7 is no full number anywhere.
const E164_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// The number in E.164 when that is certain, else `raw` unchanged (trimmed).
/// `country` is the ISO 3166-1 alpha-2 code numbers without a calling code
/// belong to.
pub fn normalize(raw: &str, country: Option<&str>) -> String {
    let trimmed = raw.trim();
    e164(trimmed, country).unwrap_or_else(|| trimmed.to_owned())
}

fn e164(text: &str, country: Option<&str>) -> Option<String> {
    // "+44 (0)20 ..." writes the trunk prefix that international dialling drops.
    let text = text.replace("(0)", "");
    let (international, digits) = digits_of(&text)?;
    let international_digits = if international {
        Some(digits.as_str())
    } else {
        digits.strip_prefix("00")
    };
    if let Some(d) = international_digits {
        return (E164_DIGITS.contains(&d.len()) && !d.starts_with('0')).then(|| format!("+{d}"));
    }
    let plan = plan_of(country?)?;
    let fits = |nsn: &str| (plan.min_len..=plan.max_len).contains(&nsn.len());
    // Already with the calling code, only the `+` missing.
    if let Some(nsn) = digits.strip_prefix(plan.calling_code)
        && fits(nsn)
        && !(plan.trunk_zero && nsn.starts_with('0'))
    {
        return Some(format!("+{digits}"));
    }
    let nsn = match digits.strip_prefix('0') {
        Some(rest) if plan.trunk_zero => rest,
        _ => digits.as_str(),
    };
    (fits(nsn) && !(plan.trunk_zero && nsn.starts_with('0')))
        .then(|| format!("+{}{nsn}", plan.calling_code))
}

/// `(starts with +, the digits)`, or `None` if the text holds anything but
/// digits (ASCII, Arabic-Indic or Extended Arabic-Indic), one leading `+`
/// and separators.
fn digits_of(text: &str) -> Option<(bool, String)> {
    let (international, rest) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '\u{0660}'..='\u{0669}' => digits.push(shift(c, '\u{0660}')),
            '\u{06F0}'..='\u{06F9}' => digits.push(shift(c, '\u{06F0}')),
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{00A0}' => {}
            _ => return None,
        }
    }
    (!digits.is_empty()).then_some((international, digits))
}

fn shift(c: char, zero: char) -> char {
    char::from(b'0' + (u32::from(c) - u32::from(zero)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_sane() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].country < w[1].country));
        for p in COUNTRIES {
            assert!(p.calling_code.bytes().all(|b| b.is_ascii_digit()));
            assert!(p.min_len <= p.max_len);
            assert!(p.calling_code.len() + p.max_len <= 15, "{}", p.country);
        }
    }

    #[test]
    fn national_numbers_get_the_accounts_calling_code() {
        let cases = [
            ("0791234567", "JO", "+962791234567"),
            ("791234567", "JO", "+962791234567"),
            ("962791234567", "JO", "+962791234567"),
            ("079 123 4567", "JO", "+962791234567"),
            ("٠٧٩١٢٣٤٥٦٧", "JO", "+962791234567"),
            ("50000123", "KW", "+96550000123"),
            ("5000 0123", "KW", "+96550000123"),
            ("96550000123", "KW", "+96550000123"),
            ("96512345", "KW", "+96596512345"),
            ("0501234567", "SA", "+966501234567"),
            ("020 7946 0321", "GB", "+442079460321"),
            ("0612345678", "IT", "+390612345678"),
            ("612 345 678", "ES", "+34612345678"),
        ];
        for (raw, country, want) in cases {
            assert_eq!(normalize(raw, Some(country)), want, "{raw} in {country}");
        }
    }

    #[test]
    fn international_forms_need_no_country() {
        let cases = [
            ("+965 5000 0123", "+96550000123"),
            ("+44 20 7946 0321", "+442079460321"),
            ("+44 (0)20 7946 0321", "+442079460321"),
            ("00962791234567", "+962791234567"),
            ("  +962-79-123-4567 ", "+962791234567"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw, None), want, "{raw}");
            assert_eq!(normalize(raw, Some("GB")), want, "{raw}");
        }
    }

    #[test]
    fn uncertain_numbers_are_kept_as_sent() {
        let cases = [
            ("0791234567", None),       // no country
            ("0791234567", Some("ZZ")), // country not in the table
            ("07912345", Some("JO")),   // too short for Jordan
            ("079123456789", Some("JO")),
            ("N/A", Some("JO")),
            ("*****", Some("GB")),
            ("+44 20 7946 0321 ext 12", Some("GB")),
            ("+123", None),
            ("+0123456789", None),
            ("", Some("JO")),
        ];
        for (raw, country) in cases {
            assert_eq!(normalize(raw, country), raw.trim(), "{raw} in {country:?}");
        }
        assert_eq!(normalize(" 12 ", None), "12");
    }
}
