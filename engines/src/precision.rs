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

/// An output's shape and values as f32, whether the model produces f32 or f16.
pub(crate) fn output_f32(value: &DynValue) -> ort::Result<(Vec<i64>, Vec<f32>)> {
    if value.dtype().tensor_type() == Some(TensorElementType::Float16) {
        let (shape, data) = value.try_extract_tensor::<f16>()?;
        return Ok((shape.to_vec(), data.iter().map(|v| v.to_f32()).collect()));
    }
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    Ok((shape.to_vec(), data.to_vec()))
}
