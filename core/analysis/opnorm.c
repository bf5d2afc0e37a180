/* opnorm.c -- operator-norm bounds of linear maps and convolutions (opnorm.h). */
#include "opnorm.h"

#include <math.h>

#include "../ops/shape.h"
#include "../theory/theory.h"

double ml_opnorm_spectral(ml_tensor *A) {
    ml_tensor *c = ml_contiguous(A);
    double s = c ? ml_theory_spectral_norm(c) : NAN;
    ml_release(c);
    return s * (1 + 1e-12);
}

/* The l1 norm of every row of a contiguous [rows, per] matrix: the largest,
 * and the root of the sum of their squares. */
static void row_sums(const float *v, int64_t rows, int64_t per, double *max, double *root) {
    double mx = 0, sq = 0;
    for (int64_t o = 0; o < rows; o++) {
        double s = 0;
        for (int64_t j = 0; j < per; j++) s += fabs(v[o * per + j]);
        mx = fmax(mx, s);
        sq += s * s;
    }
    *max = mx * (1 + 1e-12);
    *root = sqrt(sq) * (1 + 1e-12);
}

int ml_opnorm_matrix(ml_tensor *W, ml_opnorm *out) {
    ml_tensor *c = ml_contiguous(W);
    if (!c) return -1;
    out->l2 = ml_opnorm_spectral(c);
    row_sums(ml_f32(c), c->shape[0], c->shape[1], &out->linf, &out->linf2);
    ml_release(c);
    return isnan(out->l2) ? -1 : 0;
}

int ml_opnorm_conv(ml_tensor *W, int k, int stride, int groups, int64_t out_pixels, ml_opnorm *out) {
    ml_tensor *wc = ml_contiguous(W);
    if (!wc) return -1;
    int64_t O = wc->shape[0], per = O ? ml_numel(wc) / O : 0, I = wc->shape[1], kk = I ? per / I : 0;
    int64_t ms[2] = {O, per};
    ml_tensor *mat = ml_reshape(wc, 2, ms);
    double spec = mat ? ml_opnorm_spectral(mat) : NAN;
    ml_release(mat);
    double root;
    row_sums(ml_f32(wc), O, per, &out->linf, &root);
    out->l2 = ceil((double)k / (double)stride) * spec;
    if (groups == 1 && !isnan(spec)) {
        const float *v = ml_f32(wc);
        double colmax = 0;
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t o = 0; o < O; o++)
                for (int64_t j = 0; j < kk; j++) s += fabs(v[o * per + i * kk + j]);
            colmax = fmax(colmax, s);
        }
        out->l2 = fmin(out->l2, sqrt(out->linf * colmax) * (1 + 1e-12));
    }
    /* every output value is a row of the weight applied to an l_inf-bounded patch */
    out->linf2 = out_pixels > 0 ? sqrt((double)out_pixels) * root : INFINITY;
    ml_release(wc);
    return isnan(out->l2) ? -1 : 0;
}
