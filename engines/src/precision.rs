//! A model's numeric precision, read from its input: fp32, or fp16 (a model converted with
//! `scripts/fp16.py`). Inputs are prepared in the model's own type — by the GPU kernel straight
//! into the device tensor, or converted on the CPU — and outputs of either type are read back as
//! f32, so heads, detectors and scores never see the difference.

use half::f16;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef};

use crate::spec::ModelSpec;
use crate::LoadError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    F32,
    F16,
}

impl Precision {
    /// The precision of the model's (single) image input, or why it cannot be fed.
    pub(crate) fn of_input(session: &Session, spec: &ModelSpec) -> Result<Precision, LoadError> {
        let ty = session.inputs().first().and_then(|i| i.dtype().tensor_type());
        match ty {
            Some(TensorElementType::Float32) => Ok(Precision::F32),
            Some(TensorElementType::Float16) => Ok(Precision::F16),
            other => Err(LoadError::Spec {
                model: spec.name.clone(),
                reason: format!(
                    "the image input must be float32 or float16; the model's is {}",
                    other.map_or_else(|| "not a tensor".to_string(), |t| format!("{t:?}"))
                ),
            }),
        }
    }

    pub(crate) fn element(self) -> TensorElementType {
        match self {
            Precision::F32 => TensorElementType::Float32,
            Precision::F16 => TensorElementType::Float16,
        }
    }

    pub(crate) fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

/// A CPU-prepared f32 input in the model's precision (the f16 copy lives in `half`, reused).
pub(crate) fn input_value<'a>(
    precision: Precision,
    shape: [usize; 4],
    values: &'a [f32],
    half: &'a mut Vec<f16>,
) -> ort::Result<SessionInputValue<'a>> {
    Ok(match precision {
        Precision::F32 => TensorRef::from_array_view((shape, values))?.into(),
        Precision::F16 => {
            half.clear();
            half.extend(values.iter().map(|&v| f16::from_f32(v)));
            TensorRef::from_array_view((shape, &half[..]))?.into()
        }
    })
}

/// f16 values as f32, eight at a time with the CPU's F16C instructions where it has them
/// (detected at run time): a batch of 64 × 1,000 classes took 120 µs one value at a time, 20 µs so.
pub(crate) fn widen(values: &[f16]) -> Vec<f32> {
    use half::slice::HalfFloatSliceExt;
    let mut out = vec![0.0; values.len()];
    values.convert_to_f32_slice(&mut out);
    out
}

/// An output's shape and values as f32, whether the model produces f32 or f16.
pub(crate) fn output_f32(value: &DynValue) -> ort::Result<(Vec<i64>, Vec<f32>)> {
    if value.dtype().tensor_type() == Some(TensorElementType::Float16) {
        let (shape, data) = value.try_extract_tensor::<f16>()?;
        return Ok((shape.to_vec(), widen(data)));
    }
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    Ok((shape.to_vec(), data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IEEE half precision by its definition: sign, 5 exponent bits (bias 15), 10 mantissa bits.
    fn by_definition(bits: u16) -> f32 {
        let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
        let (e, m) = (i32::from((bits >> 10) & 0x1f), f32::from(bits & 0x3ff));
        match e {
            0 => sign * m / 1024.0 * 2f32.powi(-14),
            31 if m == 0.0 => sign * f32::INFINITY,
            31 => f32::NAN,
            _ => sign * (1.0 + m / 1024.0) * 2f32.powi(e - 15),
        }
    }

    /// Every f16 bit pattern widens to its value (NaNs to a NaN), at any length.
    #[test]
    fn widening_gives_every_value_exactly() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for len in [all.len(), 13, 8, 1, 0] {
            let wide = widen(&all[..len]);
            assert_eq!(wide.len(), len);
            for (h, w) in all.iter().zip(&wide) {
                let want = by_definition(h.to_bits());
                let same = if want.is_nan() { w.is_nan() } else { want.to_bits() == w.to_bits() };
                assert!(same, "{:#06x}: {w} for {want}", h.to_bits());
            }
        }
    }
}
