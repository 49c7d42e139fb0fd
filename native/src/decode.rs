//! Typing the fields of a plain payload: the fast path of `producer/frames.py`.
//!
//! `RecordLayout.convert(payload, count)` splits a (decrypted) payload on `^` into `count`
//! records of `width` fields and returns one dict per record, with the same keys, key order
//! and values as the Python converter. It returns None ("fall back") for anything it is not
//! sure about (an irregular number, a bad time or date, a field count that does not match,
//! text that is not valid UTF-8); the Python path then gives the values or the exact reason.
//! It never raises for any payload.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString};

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldType {
    String,
    Long,
    Double,
    Time,
    Date,
}

struct Column {
    key: Py<PyString>,
    position: usize,
    ftype: FieldType,
}

/// How to type records of one width of one TR (see `_Layout` in producer/frames.py).
#[pyclass(frozen, module = "kis_native")]
pub struct RecordLayout {
    width: usize,
    /// In the Python converter's key order: strings, longs, doubles, times, dates.
    columns: Vec<Column>,
    /// Columns the layout lacks (None in every record), after `columns` in key order.
    missing: Vec<Py<PyString>>,
    /// Every column (then the missing ones) -> None: copied for each record.
    template: Py<PyDict>,
}

/// `dict[key] = value` without pyo3's generic conversions (the hot loop).
#[inline]
fn set_item(
    dict: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: all three are live objects held by the caller; PyDict_SetItem takes its own
    // references.
    let status = unsafe { pyo3::ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) };
    if status == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(dict.py()))
    }
}

#[derive(Clone, Copy)]
pub enum Value<'a> {
    Null,
    Text(&'a str),
    Long(i64),
    Double(f64),
}

/// A typed value kept in Rust (a `Value` whose text is a range of its frame's payload):
/// what a lazily materialised record holds instead of one Python object per field.
#[derive(Clone, Copy)]
pub enum Stored {
    Null,
    Text { start: u32, len: u32 },
    Long(i64),
    Double(f64),
}

impl Stored {
    /// `value` with its text (which must lie within `base`) as a range of `base`.
    pub fn of(value: &Value<'_>, base: &str) -> Stored {
        match *value {
            Value::Null => Stored::Null,
            Value::Text(t) => Stored::Text {
                start: (t.as_ptr() as usize - base.as_ptr() as usize) as u32,
                len: t.len() as u32,
            },
            Value::Long(n) => Stored::Long(n),
            Value::Double(x) => Stored::Double(x),
        }
    }

    /// The value again, its text read from `base` (the payload it was typed from).
    pub fn value<'a>(&self, base: &'a str) -> Value<'a> {
        match *self {
            Stored::Null => Value::Null,
            Stored::Text { start, len } => {
                let (start, end) = (start as usize, start as usize + len as usize);
                Value::Text(&base[start..end])
            }
            Stored::Long(n) => Value::Long(n),
            Stored::Double(x) => Value::Double(x),
        }
    }
}

fn is_null(text: &str) -> bool {
    text.is_empty() || text == "(null)"
}

/// `[+-]?[0-9]{1,19}` within the 64-bit range, else None (fall back).
fn parse_long(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // Accumulate negatively so that i64::MIN fits.
    let mut value: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(d as i64)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// `[+-]?digits[.digits]` (at least one digit), finite; a negative zero falls back (the
/// Python fast path reads `-0` as the JSON integer 0).
fn parse_double(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let body = match bytes.first()? {
        b'-' | b'+' => &bytes[1..],
        _ => bytes,
    };
    let mut digits = 0usize;
    let mut dots = 0usize;
    for &c in body {
        if c.is_ascii_digit() {
            digits += 1;
        } else if c == b'.' {
            dots += 1;
        } else {
            return None;
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() || (value == 0.0 && bytes[0] == b'-') {
        return None;
    }
    Some(value)
}

fn two_digits(b: &[u8]) -> u32 {
    (b[0] - b'0') as u32 * 10 + (b[1] - b'0') as u32
}

/// `HHMMSS` -> milliseconds since midnight.
fn parse_time(text: &[u8]) -> Option<i64> {
    if text.len() != 6 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (h, m, s) = (
        two_digits(&text[0..2]),
        two_digits(&text[2..4]),
        two_digits(&text[4..6]),
    );
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some(((h * 3600 + m * 60 + s) as i64) * 1000)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDD` (a valid date, year >= 1) -> days since 1970-01-01; `00000000` is handled
/// by the caller (null).
fn parse_date(text: &[u8]) -> Option<i64> {
    if text.len() != 8 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = (two_digits(&text[0..2]) * 100 + two_digits(&text[2..4])) as i64;
    let month = two_digits(&text[4..6]) as i64;
    let day = two_digits(&text[6..8]) as i64;
    if year < 1 || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > month_days[(month - 1) as usize] {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn typed(ftype: FieldType, text: &str) -> Option<Value<'_>> {
    if is_null(text) {
        return Some(Value::Null);
    }
    Some(match ftype {
        FieldType::String => Value::Text(text),
        FieldType::Long => Value::Long(parse_long(text.as_bytes())?),
        FieldType::Double => Value::Double(parse_double(text)?),
        FieldType::Time => Value::Long(parse_time(text.as_bytes())?),
        FieldType::Date => {
            if text == "00000000" {
                Value::Null
            } else {
                Value::Long(parse_date(text.as_bytes())?)
            }
        }
    })
}

impl RecordLayout {
    /// (column name, position in the record, field type) in the dict's key order, then the
    /// `missing` columns (None).
    pub fn build(
        py: Python<'_>,
        width: usize,
        columns: Vec<(Bound<'_, PyString>, usize, String)>,
        missing: Vec<Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        let mut out = Vec::with_capacity(columns.len());
        for (key, position, ftype) in columns {
            let ftype = match ftype.as_str() {
                "string" => FieldType::String,
                "long" => FieldType::Long,
                "double" => FieldType::Double,
                "time" => FieldType::Time,
                "date" => FieldType::Date,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "unknown field type {other:?}"
                    )));
                }
            };
            if position >= width {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "position {position} outside a record of {width} fields"
                )));
            }
            out.push(Column {
                key: key.unbind(),
                position,
                ftype,
            });
        }
        let template = PyDict::new(py);
        for column in &out {
            template.set_item(column.key.bind(py), py.None())?;
        }
        for key in &missing {
            template.set_item(key, py.None())?;
        }
        Ok(RecordLayout {
            width,
            columns: out,
            missing: missing.into_iter().map(Bound::unbind).collect(),
            template: template.unbind(),
        })
    }

    pub fn columns_len(&self) -> usize {
        self.columns.len()
    }

    /// Index (into the columns) of the column named `name`, if mapped.
    pub fn column_index(&self, py: Python<'_>, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.key.bind(py).to_str().is_ok_and(|k| k == name))
    }

    pub fn is_string_column(&self, index: usize) -> bool {
        self.columns[index].ftype == FieldType::String
    }

    /// The key of column `index` (in the dict's key order).
    pub fn column_key(&self, index: usize) -> &Py<PyString> {
        &self.columns[index].key
    }

    /// The columns every record of this layout lacks (None), after the typed ones.
    pub fn missing_keys(&self) -> &[Py<PyString>] {
        &self.missing
    }

    /// Split `text` into `count` records of this width and type every mapped field; None
    /// when the field count differs or any value is not plainly regular.
    pub fn type_payload<'a>(&self, text: &'a str, count: usize) -> Option<Vec<Value<'a>>> {
        if count == 0 {
            return None;
        }
        let total = count.checked_mul(self.width)?;
        let mut parts: Vec<&str> = Vec::with_capacity(total);
        let mut start = 0;
        for (i, &byte) in text.as_bytes().iter().enumerate() {
            if byte == b'^' {
                if parts.len() + 1 == total {
                    return None; // more fields than count x width
                }
                // SAFETY: '^' is ASCII, so both ends are char boundaries of valid UTF-8.
                parts.push(unsafe { text.get_unchecked(start..i) });
                start = i + 1;
            }
        }
        if parts.len() + 1 != total {
            return None;
        }
        parts.push(&text[start..]);
        let mut values: Vec<Value<'_>> = Vec::with_capacity(count * self.columns.len());
        for record in parts.chunks_exact(self.width) {
            for column in &self.columns {
                values.push(typed(column.ftype, record[column.position])?);
            }
        }
        Some(values)
    }

    /// The dict of one record from its typed values (in column order): the same keys, key
    /// order and values as the Python converter.
    pub fn record_dict<'py, 'a>(
        &self,
        py: Python<'py>,
        values: impl Iterator<Item = Value<'a>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        // The dict starts as a copy of the template (every key -> None, in order), so
        // setting the typed values never resizes it; null values stay as copied.
        let dict = self.template.bind(py).copy()?;
        for (column, value) in self.columns.iter().zip(values) {
            let object: Bound<'py, PyAny> = match value {
                Value::Null => continue,
                Value::Text(t) => PyString::new(py, t).into_any(),
                Value::Long(n) => n.into_pyobject(py)?.into_any(),
                Value::Double(x) => PyFloat::new(py, x).into_any(),
            };
            set_item(&dict, column.key.bind(py), &object)?;
        }
        Ok(dict)
    }
}

#[pymethods]
impl RecordLayout {
    /// `columns`: (column name, position in the record, field type) in the dict's key
    /// order; `missing`: columns that come out None, after those.
    #[new]
    fn new(
        py: Python<'_>,
        width: usize,
        columns: Vec<(Bound<'_, PyString>, usize, String)>,
        missing: Vec<Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        Self::build(py, width, columns, missing)
    }

    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    /// One typed dict per record, or None to fall back to the Python path. Never raises
    /// for any payload (only on running out of memory).
    fn convert<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        count: usize,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Ok(payload) = payload.cast::<PyString>() else {
            return Ok(None);
        };
        let Ok(text) = payload.to_str() else {
            return Ok(None); // lone surrogates: not UTF-8
        };
        // Type everything first: a frame either converts whole here or falls back whole.
        let Some(values) = self.type_payload(text, count) else {
            return Ok(None);
        };
        let records = PyList::empty(py);
        let per_record = self.columns.len();
        for r in 0..count {
            let chunk = &values[r * per_record..(r + 1) * per_record];
            records.append(self.record_dict(py, chunk.iter().copied())?)?;
        }
        Ok(Some(records))
    }
}
