//! The shared `assert_close` helper fails where it must: one ulp past the
//! bound, NaN, a missing element; and its message names the element.

mod common;

use common::{assert_close, assert_close_2d};
use half::{bf16, f16};

const U_F32: f64 = 5.960_464_477_539_063e-8;

#[test]
fn values_within_the_bound_pass() {
    // Naive error 1e-3 on element 0: the kernel may be off by up to 2e-3 there.
    let exact = [1.0, 2.0];
    let naive = [1.001, 2.0];
    assert_close::<f32>("t", &[1.0019, 2.0], &exact, &naive, 0.0);
    assert_close::<f32>("t", &[0.9981, 2.0], &exact, &naive, 0.0);
}

#[test]
#[should_panic(expected = "index 1")]
fn one_ulp_too_far_fails() {
    // Naive exact: the bound on element 1 is 2·u·2 = one f32 ulp at 2 (2^-22),
    // plus the RMS term (0). Two ulps away fails.
    let exact = [1.0, 2.0];
    let got = [1.0, 2.0 + 2.0 * 4.0 * U_F32];
    assert_close::<f32>("Y", &got, &exact, &exact, 0.0);
}

#[test]
fn exactly_one_ulp_passes() {
    let exact = [1.0, 2.0];
    assert_close::<f32>("Y", &[1.0, 2.0 + 4.0 * U_F32], &exact, &exact, 0.0);
}

#[test]
#[should_panic(expected = "row 1, col 0")]
fn nan_fails_and_is_located() {
    let exact = [0.0; 4];
    assert_close_2d::<bf16>("dX", 2, &[0.0, 0.0, f64::NAN, 0.0], &exact, &exact, 1.0);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn a_missing_element_fails() {
    assert_close::<f16>("P", &[1.0, 2.0], &[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 1.0);
}

#[test]
#[should_panic(expected = "dA: first bad element")]
fn the_message_names_the_tensor() {
    assert_close::<f16>("dA", &[f64::INFINITY], &[1.0], &[1.0], 1e30);
}
