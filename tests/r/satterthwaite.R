# Satterthwaite df of contrasts of an nlme::gls fit, accurate to ~1e-8: emmeans differentiates nlme's
# finite-difference apVar; this is the same Satterthwaite formula with numDeriv's Richardson Hessian of
# nlme's own REML log-likelihood. Sourced by the reference scripts beside it.
#   fit: the gls fit; form: its fixed-effects formula; x: its data (rows in the fit's order);
#   y: the response vector; lf: contrasts, one row per contrast over coef(fit)
gls_satterthwaite_df <- function(fit, form, x, y, lf) {
  pars <- c(coef(fit$modelStruct), lSigma = log(fit$sigma))
  glsSt <- fit$modelStruct
  X <- model.matrix(form, x)
  conLin <- list(Xy = cbind(X, y), dims = list(N = nrow(x), p = ncol(X), REML = 1L), logLik = 0)
  attr(glsSt, "fixedSigma") <- FALSE
  ll <- function(par) nlme:::glsApVar.fullGlsLogLik(par, glsSt, conLin, conLin$dims, conLin$dims$N - conLin$dims$p)
  A <- solve(-numDeriv::hessian(ll, pars))
  G <- emmeans:::gls_grad(fit, fit$call, x, vcov(fit))
  sapply(seq_len(nrow(lf)), function(r) {
    k <- lf[r, ]
    g <- sapply(G, function(M) sum(k * (M %*% k)))
    2 * sum(k * (vcov(fit) %*% k))^2 / sum(g * (A %*% g))
  })
}
