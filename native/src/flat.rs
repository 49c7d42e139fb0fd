//! Reading flat Avro records: the compiled twin of `processors/flat_avro.py`'s generated
//! reader (the processors' hot path: every raw record they consume goes through it).
//!
//! A `FlatReader` is built once per writer schema from its fields in order (kind, nullable,
//! slot): it reads the Avro body field by field and puts each value in its slot of the
//! result (slot -1: read past, not kept). `read` gives a tuple of the slots (None for a slot
//! no field fills: a field the writer schema lacks), `read_dict` a dict of the slots' keys.
//! Values and errors are the Python reader's: ints, floats, str, list[str] or None; a body
//! that is truncated, has a union index other than 0/1, a varint beyond 64 bits, a negative
//! length or text that is not UTF-8 raises ValueError (the Python reader's AvroBodyError,
//! IndexError, struct.error or UnicodeDecodeError: all are "undecodable" to the codec).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyTuple};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Long,
    Double,
    String,
    StringArray,
}

struct ReadField {
    kind: Kind,
    nullable: bool,
    /// Index in the result, or None: read past and dropped.
    slot: Option<usize>,
}

/// Reader of one flat record schema (see the module doc).
#[pyclass(frozen, module = "kis_native")]
pub struct FlatReader {
    fields: Vec<ReadField>,
    width: usize,
    keys: Vec<Py<PyString>>,
}

fn body_error(what: &str) -> PyErr {
    PyValueError::new_err(what.to_string())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn byte(&mut self) -> PyResult<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(body_error("value ends inside a field")),
        }
    }

    /// A zig-zag varint of at most 64 bits (10 bytes, the last holding one bit).
    #[inline]
    fn long(&mut self) -> PyResult<i64> {
        let mut b = self.byte()?;
        let mut n = u64::from(b & 0x7F);
        let mut shift = 7u32;
        while b & 0x80 != 0 {
            b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(body_error("varint beyond 64 bits"));
            }
            if shift > 63 {
                return Err(body_error("varint longer than 10 bytes"));
            }
            n |= u64::from(b & 0x7F) << shift;
            shift += 7;
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline]
    fn text(&mut self) -> PyResult<&'a str> {
        let size = self.long()?;
        if size < 0 {
            return Err(body_error("negative string length"));
        }
        let end = self
            .pos
            .checked_add(size as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| body_error("string runs past the end of the value"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        std::str::from_utf8(bytes).map_err(|e| body_error(&format!("string is not UTF-8: {e}")))
    }

    #[inline]
    fn double(&mut self) -> PyResult<f64> {
        let end = self.pos + 8;
        if end > self.buf.len() {
            return Err(body_error("value ends inside a double"));
        }
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(f64::from_le_bytes(raw))
    }
}

impl FlatReader {
    /// The value of one field as a Python object (None for null), or None when only read
    /// past (`keep` false).
    #[inline]
    fn value<'py>(
        py: Python<'py>,
        cursor: &mut Cursor<'_>,
        field: &ReadField,
        keep: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if field.nullable {
            match cursor.byte()? {
                0 => {
                    return Ok(if keep {
                        Some(py.None().into_bound(py))
                    } else {
                        None
                    });
                }
                2 => {}
                u => return Err(body_error(&format!("union index byte {u}"))),
            }
        }
        Ok(match field.kind {
            Kind::Long => {
                let n = cursor.long()?;
                if keep {
                    Some(n.into_pyobject(py)?.into_any())
                } else {
                    None
                }
            }
            Kind::Double => {
                let x = cursor.double()?;
                if keep {
                    Some(PyFloat::new(py, x).into_any())
                } else {
                    None
                }
            }
            Kind::String => {
                let text = cursor.text()?;
                if keep {
                    Some(PyString::new(py, text).into_any())
                } else {
                    None
                }
            }
            Kind::StringArray => {
                let list = if keep { Some(PyList::empty(py)) } else { None };
                let mut count = cursor.long()?;
                while count != 0 {
                    if count < 0 {
                        count = count
                            .checked_neg()
                            .ok_or_else(|| body_error("bad block count"))?;
                        cursor.long()?; // the block's size in bytes
                    }
                    for _ in 0..count {
                        let text = cursor.text()?;
                        if let Some(list) = &list {
                            list.append(PyString::new(py, text))?;
                        }
                    }
                    count = cursor.long()?;
                }
                list.map(Bound::into_any)
            }
        })
    }

    /// Every field read in order; `put(slot, value)` for the kept ones.
    #[inline]
    fn walk<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        pos: usize,
        mut put: impl FnMut(usize, Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<()> {
        if pos > buf.len() {
            return Err(body_error("value ends before its body"));
        }
        let mut cursor = Cursor { buf, pos };
        for field in &self.fields {
            if let Some(value) = Self::value(py, &mut cursor, field, field.slot.is_some())? {
                put(field.slot.unwrap_or(0), value)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl FlatReader {
    /// `fields`: (kind, nullable, slot) per field of the writer schema, in order (kind one of
    /// long, double, string, string_array; slot -1: not kept); `keys`: one name per slot.
    #[new]
    fn new(py: Python<'_>, fields: Vec<(String, bool, i64)>, keys: Vec<String>) -> PyResult<Self> {
        let width = keys.len();
        let mut out = Vec::with_capacity(fields.len());
        for (kind, nullable, slot) in fields {
            let kind = match kind.as_str() {
                "long" => Kind::Long,
                "double" => Kind::Double,
                "string" => Kind::String,
                "string_array" => Kind::StringArray,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "unsupported field kind {kind:?}"
                    )));
                }
            };
            let slot = if slot < 0 {
                None
            } else if (slot as usize) < width {
                Some(slot as usize)
            } else {
                return Err(PyValueError::new_err(format!(
                    "slot {slot} outside {width} keys"
                )));
            };
            out.push(ReadField {
                kind,
                nullable,
                slot,
            });
        }
        Ok(FlatReader {
            fields: out,
            width,
            keys: keys
                .iter()
                .map(|k| PyString::intern(py, k).unbind())
                .collect(),
        })
    }

    /// The slots' values as a tuple (None where no field of the writer schema fills one).
    fn read<'py>(&self, py: Python<'py>, buf: &[u8], pos: usize) -> PyResult<Bound<'py, PyTuple>> {
        let mut values: Vec<Option<Bound<'py, PyAny>>> = vec![None; self.width];
        self.walk(py, buf, pos, |slot, value| {
            values[slot] = Some(value);
            Ok(())
        })?;
        PyTuple::new(
            py,
            values
                .into_iter()
                .map(|v| v.unwrap_or_else(|| py.None().into_bound(py))),
        )
    }

    /// The slots' values as a dict, keys in slot order (a slot no field fills: None).
    fn read_dict<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        pos: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let tuple = self.read(py, buf, pos)?;
        let dict = PyDict::new(py);
        for (key, value) in self.keys.iter().zip(tuple.iter()) {
            dict.set_item(key.bind(py), value)?;
        }
        Ok(dict)
    }

    /// The keys, one per slot.
    #[getter]
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.keys.iter().map(|k| k.bind(py).clone()))
    }
}
