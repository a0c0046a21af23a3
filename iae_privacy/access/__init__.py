"""Who may restore what: the signed policy, decode requests (the requester's side), the authorizer
that turns a request into a grant, the restore itself, and the audit log every decision goes to
(:mod:`.audit`)."""
