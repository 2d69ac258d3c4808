/** An invalid configuration: the message names the field and the problem, and startup stops. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}
