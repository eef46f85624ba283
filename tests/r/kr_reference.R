# Reference Kenward-Roger inference for fclab's mmrm engine, computed independently in R:
# nlme::gls gives the REML fit, which is then polished by Newton steps on the REML deviance written
# out below; every derivative (of Sigma, of the deviance, of Phi) is numerical (numDeriv, Richardson).
# The parameters are SAS PROC MIXED's: us the entries of Sigma, cs (residual, CS covariance),
# csh (the K variances, rho), ar1 (sigma^2, rho).
# Usage: Rscript kr_reference.R data.csv contrasts.csv STRUCTURE out.csv
#   data.csv: subject, idx (window position 1..K), value, x1..xp (the fixed-effects design)
#   contrasts.csv: name, x1..xp; rows sharing a name form one multi-df contrast
# out.csv: per contrast name: c, estimate (c = 1) or F (KR-scaled), se_kr, se_krl (c = 1), df (c = 1:
#   Satterthwaite's from the numerical gradient of l'Phi(theta)l; c > 1: KR's m), lambda, and the
#   REML deviance at the optimum.
suppressMessages(library(nlme))
a <- commandArgs(TRUE)
d <- read.csv(a[1], stringsAsFactors = FALSE)
cons <- read.csv(a[2], stringsAsFactors = FALSE)
struct <- a[3]
xs <- grep("^x[0-9]+$", names(d), value = TRUE)
K <- max(d$idx)
d <- d[order(d$subject, d$idx), ]
X <- as.matrix(d[xs]); y <- d$value
rows <- split(seq_len(nrow(d)), d$subject)
iu <- which(upper.tri(diag(K), diag = TRUE), arr.ind = TRUE)

sigma_of <- function(th) switch(struct,
  us = { S <- matrix(0, K, K); S[iu] <- th; S[iu[, 2:1]] <- th; S },
  cs = th[1] * diag(K) + th[2],
  csh = { s <- sqrt(th[1:K]); outer(s, s) * (th[K + 1] + (1 - th[K + 1]) * diag(K)) },
  ar1 = th[1] * th[2]^abs(outer(1:K, 1:K, "-")))

# Subjects grouped by their pattern of observed windows. Per pattern, XX[[t]] = sum over its subjects
# of X_s[k, ]' X_s[l, ] for the t-th (k, l) cell (column-major), so that sum_s X_s' A X_s =
# sum_t A[t] XX[[t]] for any A on the pattern's windows.
pats <- lapply(split(rows, sapply(rows, function(r) paste(d$idx[r], collapse = ","))), function(rs) {
  o <- d$idx[rs[[1]]]; n <- length(o)
  Xk <- lapply(1:n, function(k) X[sapply(rs, `[`, k), , drop = FALSE])
  Yk <- sapply(1:n, function(k) y[sapply(rs, `[`, k)])
  if (!is.matrix(Yk)) Yk <- matrix(Yk, nrow = length(rs))
  XX <- list(); XY <- list()
  for (l in 1:n) for (k in 1:n) {
    XX[[length(XX) + 1]] <- crossprod(Xk[[k]], Xk[[l]])
    XY[[length(XY) + 1]] <- crossprod(Xk[[k]], Yk[, l])
  }
  list(o = o, n = length(rs), Xk = Xk, Yk = Yk, XX = XX, XY = XY)
})
wsum <- function(A, L) Reduce(`+`, Map(`*`, as.vector(A), L))
inv_blocks <- function(th) { S <- sigma_of(th); lapply(pats, function(pt) solve(S[pt$o, pt$o, drop = FALSE])) }
phi_of <- function(th) { Vi <- inv_blocks(th); solve(Reduce(`+`, Map(function(pt, v) wsum(v, pt$XX), pats, Vi))) }
deviance <- function(th) {
  S <- sigma_of(th)
  if (any(!is.finite(S)) || min(eigen(S, symmetric = TRUE, only.values = TRUE)$values) <= 0) return(Inf)
  Vi <- inv_blocks(th)
  M <- Reduce(`+`, Map(function(pt, v) wsum(v, pt$XX), pats, Vi))
  b <- Reduce(`+`, Map(function(pt, v) wsum(v, pt$XY), pats, Vi))
  beta <- solve(M, b)
  ld <- sum(mapply(function(pt, v) -pt$n * determinant(v)$modulus, pats, Vi))
  q <- sum(mapply(function(pt, v) {
    R <- pt$Yk - sapply(pt$Xk, function(x) x %*% beta); if (!is.matrix(R)) R <- matrix(R, nrow = pt$n)
    sum(v * crossprod(R)) }, pats, Vi))
  ld + determinant(M)$modulus + q
}

# Start from nlme::gls (its Sigma in SAS's parameters), then Newton on the deviance above.
d$window <- factor(d$idx)
form <- as.formula(paste("value ~ 0 +", paste(xs, collapse = " + ")))
cst <- switch(struct, us = corSymm(form = ~ idx | subject), csh = corCompSymm(form = ~ idx | subject),
              cs = corCompSymm(form = ~ idx | subject), ar1 = corAR1(form = ~ idx | subject))
ctl <- glsControl(maxIter = 1000, msMaxIter = 1000, tolerance = 1e-10, msTol = 1e-12, returnObject = TRUE)
fit <- if (struct %in% c("us", "csh")) gls(form, data = d, correlation = cst, weights = varIdent(form = ~ 1 | window),
                                         method = "REML", control = ctl) else
  gls(form, data = d, correlation = cst, method = "REML", control = ctl)
S0 <- getVarCov(fit, individual = names(which(table(d$subject) == K))[1])
th <- switch(struct, us = S0[iu], cs = c(S0[1, 1] - S0[1, 2], S0[1, 2]),
             csh = c(diag(S0), S0[1, 2] / sqrt(S0[1, 1] * S0[2, 2])), ar1 = c(S0[1, 1], S0[1, 2] / S0[1, 1]))
# Steps of 3e-3 of each parameter plus 3e-3 of the largest: numDeriv's default relative step is
# far too small for a covariance near 0 (rounding in the deviance would dominate its Hessian).
nd <- function(th) list(d = 3e-3, eps = 3e-3 * max(abs(th)), zero.tol = Inf, r = 6)
for (it in 1:6) {
  g <- numDeriv::grad(deviance, th, method.args = nd(th))
  H <- numDeriv::hessian(deviance, th, method.args = nd(th))
  step <- solve(H, g)
  t <- 1
  while (deviance(th - t * step) > deviance(th) + 1e-12 && t > 1e-6) t <- t / 2
  th <- th - t * step
  if (sum(g * step) < 1e-12) break  # Newton decrement: at the optimum to rounding
}
W <- 2 * solve(numDeriv::hessian(deviance, th, method.args = nd(th)))
q <- length(th); p <- ncol(X)
J <- numDeriv::jacobian(function(t) as.vector(sigma_of(t)), th)  # (K*K, q)
J2 <- numDeriv::jacobian(function(t) as.vector(numDeriv::jacobian(function(u) as.vector(sigma_of(u)), t)), th)
dS <- lapply(1:q, function(i) matrix(J[, i], K, K))
d2S <- function(i, j) matrix(J2[(i - 1) * K * K + 1:(K * K), j], K, K)
Phi <- phi_of(th)
Vi <- inv_blocks(th)
sub <- function(A, pt) A[pt$o, pt$o, drop = FALSE]
Pm <- lapply(1:q, function(i) -Reduce(`+`, Map(function(pt, v) wsum(v %*% sub(dS[[i]], pt) %*% v, pt$XX), pats, Vi)))
U <- UR <- matrix(0, p, p)
for (i in 1:q) for (j in 1:q) {
  Qij <- Reduce(`+`, Map(function(pt, v) wsum(v %*% sub(dS[[i]], pt) %*% v %*% sub(dS[[j]], pt) %*% v, pt$XX), pats, Vi))
  Rij <- Reduce(`+`, Map(function(pt, v) wsum(v %*% sub(d2S(i, j), pt) %*% v, pt$XX), pats, Vi))
  U <- U + W[i, j] * (Qij - Pm[[i]] %*% Phi %*% Pm[[j]])
  UR <- UR + W[i, j] * Rij
}
PhiA <- Phi + 2 * Phi %*% (U - UR / 4) %*% Phi
PhiAL <- Phi + 2 * Phi %*% U %*% Phi
beta <- Phi %*% Reduce(`+`, Map(function(pt, v) wsum(v, pt$XY), pats, Vi))

out <- list()
for (nm in unique(cons$name)) {
  L <- t(as.matrix(cons[cons$name == nm, xs, drop = FALSE]))  # (p, c)
  cc <- ncol(L)
  if (cc == 1) {
    v <- drop(t(L) %*% Phi %*% L)
    gr <- numDeriv::grad(function(t) drop(t(L) %*% phi_of(t) %*% L), th, method.args = nd(th))
    out[[nm]] <- data.frame(name = nm, c = 1, estimate = drop(t(L) %*% beta), se_kr = sqrt(drop(t(L) %*% PhiA %*% L)),
                            se_krl = sqrt(drop(t(L) %*% PhiAL %*% L)), df = 2 * v^2 / drop(t(gr) %*% W %*% gr),
                            lambda = 1, deviance = deviance(th))
  } else {
    M <- L %*% solve(t(L) %*% Phi %*% L) %*% t(L)
    Tm <- lapply(1:q, function(i) M %*% Phi %*% Pm[[i]] %*% Phi)
    A1 <- A2 <- 0
    for (i in 1:q) for (j in 1:q) {
      A1 <- A1 + W[i, j] * sum(diag(Tm[[i]])) * sum(diag(Tm[[j]]))
      A2 <- A2 + W[i, j] * sum(diag(Tm[[i]] %*% Tm[[j]]))
    }
    B <- (A1 + 6 * A2) / (2 * cc)
    g <- ((cc + 1) * A1 - (cc + 4) * A2) / ((cc + 2) * A2)
    den <- 3 * cc + 2 * (1 - g)
    c1 <- g / den; c2 <- (cc - g) / den; c3 <- (cc + 2 - g) / den
    Es <- 1 / (1 - A2 / cc)
    Vs <- 2 / cc * (1 + c1 * B) / ((1 - c2 * B)^2 * (1 - c3 * B))
    rho <- Vs / (2 * Es^2)
    m <- 4 + (cc + 2) / (cc * rho - 1)
    lam <- m / (Es * (m - 2))
    e <- t(L) %*% beta
    Fs <- drop(t(e) %*% solve(t(L) %*% PhiA %*% L) %*% e) / cc
    out[[nm]] <- data.frame(name = nm, c = cc, estimate = lam * Fs, se_kr = NA, se_krl = NA, df = m, lambda = lam,
                            deviance = deviance(th))
  }
}
write.csv(do.call(rbind, out), a[4], row.names = FALSE)
