// Errors carry a stable code (match on it, not on the message) and a message that tells the
// user what to do.
export type ErrorCode =
  | 'PCL_CONFIG_INVALID'
  | 'PCL_POLICY_INVALID'
  | 'PCL_UPSTREAM_EXITED'
  | 'PCL_UPSTREAM_UNAVAILABLE'
  | 'PCL_UPSTREAM_TIMEOUT'
  | 'PCL_UPSTREAM_RESULT_TOO_LARGE'
  | 'PCL_AUDIT_WRITE_FAILED'
  | 'PCL_AUTH_FAILED'
  | 'PCL_STORE_INVALID'
  | 'PCL_USAGE';

export interface Problem {
  file?: string;
  line?: number;
  /** 1-based, where it helps (YAML syntax errors). */
  column?: number;
  field?: string;
  message: string;
}

export class PortcullisError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly problems: Problem[] = [],
  ) {
    super(message);
    this.name = 'PortcullisError';
  }
}

/** One line per problem: `file:line[:column]: field: message`. */
export function formatProblem(p: Problem): string {
  const where = [p.file, p.line, p.line !== undefined ? p.column : undefined].filter((x) => x !== undefined).join(':');
  return [where, p.field, p.message].filter(Boolean).join(': ');
}
