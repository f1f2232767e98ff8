/**
 * An error meant for a person: it names the problem and the fix. Edges (CLI, UI, API) show `message` alone,
 * with no stack trace.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
  constructor(message: string) {
    super(message);
  }
}
