//! The engine's own ONNX operators, in the domain `cascade`, registered on every session.
//!
//! `cascade.MatMulBiasGelu(A, W, bias) -> Y` is `gelu(A·W + bias)` with the tanh form of GELU,
//! `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: A is `[..., K]`, W a `[K, N]` matrix, bias
//! `[N]`, Y `[..., N]`, all float32 or all float16. It stands for ONNX Runtime's
//! `MatMul → BiasGelu` pair in a transformer's MLP (`scripts/train/gemm_gelu.py` rewrites a
//! fused graph to it). On CUDA it is one cuBLASLt matrix product whose epilogue adds the bias
//! and applies GELU as it writes the product (`gpu::GemmGelu`); ONNX Runtime's CUDA provider has
//! no such node, and its pair reads and writes the `[M, 4·D]` activation once more. cuBLASLt's
//! GELU epilogue is the tanh form, hence the operator's definition; it differs from the erf
//! form by less than 5·10⁻⁴ anywhere. On the CPU a plain loop computes the same function, so
//! that a rewritten model still opens and answers there (slowly: it is a reference, for tests
//! and for a CUDA model that falls back to the CPU).

use std::sync::Arc;

use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
};
use ort::value::{DynTensorValueType, TensorElementType};

use crate::spec::Device;

/// The operators' domain, as a rewritten model's nodes name it.
pub(crate) const DOMAIN: &str = "cascade";
const GEMM_GELU: &str = "MatMulBiasGelu";

/// `cascade`'s operators for a session on `device`: the CPU kernels always (a node ONNX
/// Runtime cannot place on CUDA runs there), the CUDA kernels on a CUDA device.
pub(crate) fn domain(device: Device) -> ort::Result<OperatorDomain> {
    let mut d = OperatorDomain::new(DOMAIN)?;
    let lt = match device {
        Device::Cuda(id) => Some(Arc::new(crate::gpu::Lt::new(id))),
        Device::Cpu => None,
    };
    for ty in [TensorElementType::Float32, TensorElementType::Float16] {
        d = d.add(MatMulBiasGelu { ty, cuda: None })?;
        if let Some(lt) = &lt {
            d = d.add(MatMulBiasGelu { ty, cuda: Some(lt.clone()) })?;
        }
    }
    Ok(d)
}

struct MatMulBiasGelu {
    ty: TensorElementType,
    /// The CUDA variant: what its kernels share (`gpu::Lt`); `None`: the CPU variant.
    cuda: Option<Arc<crate::gpu::Lt>>,
}

impl Operator for MatMulBiasGelu {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        GEMM_GELU
    }

    fn execution_provider_type(&self) -> Option<&str> {
        self.cuda.as_ref().map(|_| "CUDAExecutionProvider")
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [0; 3].map(|_| OperatorInput::required(self.ty))
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(self.ty)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let f16 = self.ty == TensorElementType::Float16;
        Ok(match &self.cuda {
            None => Box::new(CpuGemmGelu { f16 }),
            Some(lt) => Box::new(crate::gpu::GemmGelu::new(lt.clone(), f16).map_err(ort::Error::new)?),
        })
    }
}

/// The operands' sizes: `m` rows of A (every leading dimension), `k`, `n`; and Y's shape.
pub(crate) struct Dims {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) out: Vec<i64>,
}

/// Reads and checks the three inputs' shapes.
pub(crate) fn dims(a: &[i64], w: &[i64], bias: &[i64]) -> Result<Dims, String> {
    let (Some((&k, lead)), &[wk, n]) = (a.split_last(), w) else {
        return Err(format!("{GEMM_GELU}: A must have a last dimension and W two; got {a:?} and {w:?}"));
    };
    if k != wk || bias != [n] {
        return Err(format!("{GEMM_GELU}: shapes do not agree: A {a:?}, W {w:?}, bias {bias:?}"));
    }
    let m: i64 = lead.iter().product();
    let mut out = lead.to_vec();
    out.push(n);
    let size = |v: i64| usize::try_from(v).map_err(|_| format!("{GEMM_GELU}: negative dimension in {a:?} / {w:?}"));
    Ok(Dims { m: size(m)?, k: size(k)?, n: size(n)?, out })
}

/// GELU, tanh form (cuBLASLt's epilogue).
pub(crate) fn gelu(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// The CPU kernel: float32 arithmetic for either element type.
struct CpuGemmGelu {
    f16: bool,
}

impl Kernel for CpuGemmGelu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| ort::Error::new(format!("{GEMM_GELU}: input {i} missing")));
        let (a, w, b) = (input(0)?, input(1)?, input(2)?);
        let floats = |v: &ort::value::ValueRef<'_>| -> ort::Result<(Vec<i64>, Vec<f32>)> {
            if self.f16 {
                let (s, d) = v.try_extract_tensor::<half::f16>()?;
                Ok((s.to_vec(), crate::precision::widen(d)))
            } else {
                let (s, d) = v.try_extract_tensor::<f32>()?;
                Ok((s.to_vec(), d.to_vec()))
            }
        };
        let ((sa, a), (sw, w), (sb, b)) = (floats(&a)?, floats(&w)?, floats(&b)?);
        let d = dims(&sa, &sw, &sb).map_err(ort::Error::new)?;
        let mut y = vec![0f32; d.m * d.n];
        for (row, out) in a.chunks_exact(d.k.max(1)).zip(y.chunks_exact_mut(d.n.max(1))) {
            out.copy_from_slice(&b);
            for (&x, wrow) in row.iter().zip(w.chunks_exact(d.n.max(1))) {
                for (o, &wv) in out.iter_mut().zip(wrow) {
                    *o += x * wv;
                }
            }
            for o in out.iter_mut() {
                *o = gelu(*o);
            }
        }
        let mut out = ctx.output(0, d.out)?.ok_or_else(|| ort::Error::new(format!("{GEMM_GELU}: no output")))?;
        if self.f16 {
            let (_, o) = out.try_extract_tensor_mut::<half::f16>()?;
            o.iter_mut().zip(&y).for_each(|(o, &v)| *o = half::f16::from_f32(v));
        } else {
            let (_, o) = out.try_extract_tensor_mut::<f32>()?;
            o.copy_from_slice(&y);
        }
        Ok(())
    }
}

/// A CUDA kernel's view of an input: its device address and shape.
pub(crate) fn device_input(ctx: &ComputeContext, i: usize) -> ort::Result<(u64, Vec<i64>)> {
    let v = ctx.input(i)?.ok_or_else(|| ort::Error::new(format!("{GEMM_GELU}: input {i} missing")))?;
    let t = v.downcast::<DynTensorValueType>()?;
    Ok((t.data_ptr() as u64, t.shape().to_vec()))
}

/// A CUDA kernel's output `0` of `shape`, allocated by ONNX Runtime on the device: its address.
pub(crate) fn device_output(ctx: &ComputeContext, shape: Vec<i64>) -> ort::Result<u64> {
    let v = ctx.output(0, shape)?.ok_or_else(|| ort::Error::new(format!("{GEMM_GELU}: no output")))?;
    let t = v.downcast::<DynTensorValueType>()?;
    Ok(t.data_ptr() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_and_rows_are_every_leading_dimension() {
        let d = dims(&[2, 197, 768], &[768, 3072], &[3072]).expect("valid");
        assert_eq!((d.m, d.k, d.n, d.out), (394, 768, 3072, vec![2, 197, 3072]));
        assert!(dims(&[2, 197, 768], &[767, 3072], &[3072]).is_err());
        assert!(dims(&[2, 197, 768], &[768, 3072], &[3071]).is_err());
        assert!(dims(&[], &[768, 3072], &[3072]).is_err());
        assert!(dims(&[4, 768], &[768, 3072, 1], &[3072]).is_err());
    }

    #[test]
    fn gelu_is_the_tanh_form_and_close_to_erf() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu(-3.0) + 0.003_637).abs() < 1e-5);
        // erf form at the same points: 0.841345, -0.004050
        assert!((gelu(1.0) - 0.841_345).abs() < 5e-4 && (gelu(-3.0) + 0.004_050).abs() < 5e-4);
    }
}
