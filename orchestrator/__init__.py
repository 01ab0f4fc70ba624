"""Control plane (login node): CLI, grid spec, expansion, backends, supervision, status, report."""
