// A render error inside one panel or chart stays in that panel (issue 19, item 1: one
// histogram whose tick loop threw `Invalid array length` unmounted the whole run page).
import { Component, type ErrorInfo, type ReactNode } from "react";

type Props = {
  /** what the boxed widget is, for the message ("Per-unit distributions could not be shown") */
  name: string;
  children: ReactNode;
  /** a value that, when it changes (another layer, unit or state), clears the error and tries again */
  resetKey?: unknown;
};

type State = { error: Error | null };

/**
 * React's error boundary around one widget: when rendering it throws, a small error box
 * with the message takes its place and the rest of the page stays. "Try again" renders
 * it anew; so does a change of `resetKey`.
 */
export class ErrorBoundary extends Component<Props, State> {
  state: State = { error: null };

  static getDerivedStateFromError(error: unknown): State {
    return { error: error instanceof Error ? error : new Error(String(error)) };
  }

  componentDidCatch(error: unknown, info: ErrorInfo) {
    // the message is on the page; the component stack goes to the console for a bug report
    console.error(`${this.props.name} failed to render:`, error, info.componentStack);
  }

  componentDidUpdate(prev: Props) {
    if (this.state.error && !Object.is(prev.resetKey, this.props.resetKey)) this.setState({ error: null });
  }

  render() {
    const { error } = this.state;
    if (!error) return this.props.children;
    return (
      <div className="state error widget-error" role="alert" data-testid="widget-error">
        <strong>{this.props.name} could not be shown</strong>
        <p className="mono wrap">{error.message || error.name}</p>
        <p className="muted small">The rest of the page is unaffected.</p>
        <button type="button" onClick={() => this.setState({ error: null })}>
          Try again
        </button>
      </div>
    );
  }
}
