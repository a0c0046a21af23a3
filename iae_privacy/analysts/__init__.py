"""The analysts' side: read-only SQL over latent tables (:mod:`.query`), synthetic records
(:mod:`.synthesize`), the attacks that measure what a latent table gives away (:mod:`.attacks`),
the evaluation that runs them (:mod:`.evaluate`) and its report (:mod:`.report`)."""
