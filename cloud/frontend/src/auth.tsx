/**
 * Sign-in with an API token. The token lives in sessionStorage: it goes when the tab
 * closes, and is never written where another site or a later user could read it.
 */
import { createContext, useContext } from "react";
import { Client } from "./api/client";
import type { Me, Role } from "./api/types";

const STORAGE_KEY = "intellioptics.token";

export function storedToken(): string | null {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function storeToken(token: string | null): void {
  if (token) sessionStorage.setItem(STORAGE_KEY, token);
  else sessionStorage.removeItem(STORAGE_KEY);
}

export interface Session {
  client: Client;
  me: Me;
  signOut: () => void;
  /**
   * Sign in again with another token without leaving the page (the review queue keeps its
   * unsaved labels and sends them after); resolves to an error message or null.
   */
  signInAgain?: (token: string) => Promise<string | null>;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a signed-in page");
  return session;
}

/** What each role may open; the cloud enforces the same rules, this only hides dead ends. */
export const CAN: Record<string, (role: Role) => boolean> = {
  review: (role) => role === "admin" || role === "reviewer",
  detectors: (role) => role === "admin" || role === "reviewer",
  editDetectors: (role) => role === "admin",
  models: (role) => role === "admin" || role === "reviewer",
  train: (role) => role === "admin",
  edges: (role) => role === "admin",
  tokens: (role) => role === "admin",
};
