# Reference fits of fclab's crossover MMRMs with nlme (and pbkrtest), built from R's own formulas.
# Usage: Rscript crossover_reference.R data.csv out.csv
#   data.csv: edge, subject, condition (ref/target), period (1/2), window (baseline first), value
# Per edge, from the raw values (R computes every change, difference and covariate itself):
#   difference  gls(d ~ 0 + window + seq, corSymm + varIdent), d = change(target) - change(ref),
#               seq = +1 reference first, -1 target first; emmeans at seq = 0, Satterthwaite df (satterthwaite.R)
#   slots_cs    lme(change ~ 0 + window + window:cond + period, random = ~1 | subject); the
#               condition effect per window, its model-based SE, and pbkrtest's Kenward-Roger SE and df
#               from lmer on the same model
#   slots_csh   gls(change ~ same, corCompSymm over the subject's slots, varIdent by slot)
# out.csv: edge, model, window, estimate, se, df, se_kr, df_kr, loglik (REML)
suppressMessages({library(nlme); library(emmeans); library(lme4); library(pbkrtest)})
a <- commandArgs(TRUE)
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))), "satterthwaite.R"))
d <- read.csv(a[1], stringsAsFactors = FALSE, colClasses = c(subject = "character"))
wl <- unique(d$window)  # baseline first
eff <- wl[-1]
ctl <- glsControl(maxIter = 1000, msMaxIter = 1000, tolerance = 1e-12, msTol = 1e-14, returnObject = TRUE)
lctl <- lmeControl(maxIter = 1000, msMaxIter = 1000, tolerance = 1e-12, msTol = 1e-14, returnObject = TRUE)
rows <- list()
for (e in unique(d$edge)) {
  x <- d[d$edge == e & !is.na(d$value), ]
  base <- x[x$window == wl[1], c("subject", "condition", "value")]
  names(base)[3] <- "base"
  ch <- merge(x[x$window != wl[1], ], base, by = c("subject", "condition"))
  ch$change <- ch$value - ch$base
  ch$window <- factor(ch$window, levels = eff)
  ch$cond <- as.numeric(ch$condition == "target")
  ch$period2 <- as.numeric(ch$period == 2) - 0.5
  ch$slot <- factor(paste(ch$condition, ch$window), levels = c(paste("ref", eff), paste("target", eff)))
  ch$idx <- as.integer(ch$slot)
  ch <- ch[order(ch$subject, ch$idx), ]
  ch$subject <- factor(ch$subject)

  # within-subject differences
  tt <- ch[ch$condition == "target", c("subject", "window", "change", "period")]
  rr <- ch[ch$condition == "ref", c("subject", "window", "change")]
  dd <- merge(tt, rr, by = c("subject", "window"), suffixes = c("_t", "_r"))
  dd$dv <- dd$change_t - dd$change_r
  dd$seq <- ifelse(dd$period == 1, -1, 1)  # target in period 1: -1
  dd$window <- factor(dd$window, levels = eff)
  dd$idx <- as.integer(dd$window)
  dd <- dd[order(dd$subject, dd$idx), ]
  fit <- gls(dv ~ 0 + window + seq, data = dd, correlation = corSymm(form = ~ idx | subject),
             weights = varIdent(form = ~ 1 | window), method = "REML", control = ctl)
  emm <- emmeans(fit, ~ window, at = list(seq = 0), mode = "satterthwaite", data = dd)
  em <- summary(emm)
  df <- gls_satterthwaite_df(fit, dv ~ 0 + window + seq, dd, dd$dv, emm@linfct)
  rows[[length(rows) + 1]] <- data.frame(edge = e, model = "difference", window = as.character(em$window),
                                         estimate = em$emmean, se = em$SE, df = df, se_kr = NA, df_kr = NA,
                                         loglik = as.numeric(logLik(fit)))

  form <- change ~ 0 + window + window:cond + period2
  fl <- lme(form, random = ~ 1 | subject, data = ch, method = "REML", control = lctl)
  cf <- summary(fl)$tTable
  nm <- paste0("window", eff, ":cond")
  ml <- lmer(change ~ 0 + window + window:cond + period2 + (1 | subject), data = ch, REML = TRUE,
             control = lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-16,
                                   xtol_rel = 1e-14, maxeval = 100000), calc.derivs = FALSE))
  PhiA <- as.matrix(vcovAdj(ml))
  beta <- fixef(ml)
  kr_se <- kr_df <- numeric(length(eff))
  for (k in seq_along(eff)) {
    L <- matrix(as.numeric(names(beta) == nm[k]), nrow = 1)
    kr_se[k] <- sqrt(drop(L %*% PhiA %*% t(L)))
    kr_df[k] <- get_Lb_ddf(ml, L)
  }
  rows[[length(rows) + 1]] <- data.frame(edge = e, model = "slots_cs", window = eff, estimate = cf[nm, "Value"],
                                         se = cf[nm, "Std.Error"], df = NA, se_kr = kr_se, df_kr = kr_df,
                                         loglik = as.numeric(logLik(fl)))

  fh <- gls(form, data = ch, correlation = corCompSymm(form = ~ idx | subject),
            weights = varIdent(form = ~ 1 | slot), method = "REML", control = ctl)
  ch2 <- summary(fh)$tTable
  rows[[length(rows) + 1]] <- data.frame(edge = e, model = "slots_csh", window = eff, estimate = ch2[nm, "Value"],
                                         se = ch2[nm, "Std.Error"], df = NA, se_kr = NA, df_kr = NA,
                                         loglik = as.numeric(logLik(fh)))
}
write.csv(do.call(rbind, rows), a[2], row.names = FALSE)
