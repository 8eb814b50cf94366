//! The workspace builds against the patched candle-core in `third_party/candle-core`
//! (`PATCHED.md` there, decisions F17): its backward pass stores a gradient's first contribution
//! as it is instead of adding it to a zero tensor. These tests fail on the published crate
//! (the sign of a zero gradient) or if the patch lost a check the published `add` made.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a small f32 tensor")
}

#[test]
fn a_zero_gradient_keeps_its_sign() -> candle_core::Result<()> {
    // d(sum(x * c))/dx = c = [-0.0, 3.0]. The published crate adds that to zeros: +0.0 + -0.0
    // is +0.0. The patched one stores it as it is.
    let x = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
    let c = Tensor::new(&[-0.0f32, 3.0], &Device::Cpu)?;
    let grads = x.as_tensor().mul(&c)?.sum_all()?.backward()?;
    let g = values(grads.get(&x).expect("x has a gradient"));
    assert_eq!(g, vec![0.0, 3.0]);
    assert!(g[0].is_sign_negative(), "gradient {:?}: candle-core is not the patched copy in third_party/", g[0]);
    Ok(())
}

#[test]
fn contributions_after_the_first_are_added() -> candle_core::Result<()> {
    // x feeds three consumers: x·x, 3x and x again; d/dx = 2x + 3 + 1.
    let x = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu)?;
    let t = x.as_tensor();
    let y = ((t.mul(t)? + t.affine(3.0, 0.0)?)? + t)?;
    let grads = y.sum_all()?.backward()?;
    assert_eq!(values(grads.get(&x).expect("x has a gradient")), vec![6.0, 0.0, 5.0]);
    Ok(())
}

/// The identity, whose backward returns a gradient of another shape or dtype on request.
struct BadGrad {
    wrong_dtype: bool,
}

impl CustomOp1 for BadGrad {
    fn name(&self) -> &'static str {
        "bad-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else { candle_core::bail!("f32 only") };
        let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("contiguous only".into()))?;
        Ok((CpuStorage::F32(v[start..end].to_vec()), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if self.wrong_dtype {
            Ok(Some(grad.to_dtype(DType::F64)?))
        } else {
            Ok(Some(grad.flatten_all()?.narrow(0, 0, 1)?))
        }
    }
}

#[test]
fn a_gradient_of_the_wrong_shape_or_dtype_is_still_an_error() -> candle_core::Result<()> {
    for wrong_dtype in [false, true] {
        let x = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let y = x.as_tensor().apply_op1(BadGrad { wrong_dtype })?;
        let err = y.sum_all()?.backward().expect_err("a mismatched gradient must not be stored");
        let msg = err.to_string();
        let expected = if wrong_dtype { "dtype mismatch" } else { "shape mismatch" };
        assert!(msg.contains(expected), "wrong_dtype {wrong_dtype}: {msg}");
    }
    Ok(())
}
